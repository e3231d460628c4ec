//! Replication end to end: GlobalTenantResource and TenantResource copying into tenant namespaces.

use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, eventually};

async fn start(cluster: &Cluster) -> Bulkhead {
    let lease = cluster.unique("e2e-rep-lease");
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    bulkhead
}

fn get(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.kubectl().run(args);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_global_tenant_resource_fills_selected_tenants_follows_its_source_and_prunes() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-rep-a"), cluster.unique("e2e-rep-b"));
    let platform = cluster.unique("e2e-platform");
    let gtr = cluster.unique("e2e-gtr");
    let alice = cluster.unique("alice");
    let bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {platform}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cluster-info, namespace: {platform}, labels: {{share: "yes"}}}}
data: {{region: eu-west-1}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: private, namespace: {platform}}}
data: {{secret: "no"}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {a}, labels: {{e2e-replication: {gtr}-in}}}}
spec: {{owners: [{{kind: User, name: {alice}}}]}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {b}, labels: {{e2e-replication: {gtr}-out}}}}
spec: {{owners: [{{kind: User, name: bob}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-one, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-two, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {b}-one, labels: {{bulkhead.dev/tenant: {b}}}}}
"#
    ));
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: GlobalTenantResource
metadata: {{name: {gtr}}}
spec:
  # A selector no other tenant matches: the suite may share a real cluster.
  tenantSelector: {{matchLabels: {{e2e-replication: {gtr}-in}}}}
  resyncPeriod: 10m  # source edits must arrive through the source watch, not a resync
  resources:
  - additionalMetadata: {{labels: {{copied-by: platform}}}}
    namespacedItems:
    - {{apiVersion: v1, kind: ConfigMap, namespace: {platform}, selector: {{matchLabels: {{share: "yes"}}}}}}
    rawItems:
    - apiVersion: networking.k8s.io/v1
      kind: NetworkPolicy
      metadata: {{name: deny-all}}
      spec: {{podSelector: {{}}, policyTypes: [Ingress]}}
"#
    ));
    for ns in [format!("{a}-one"), format!("{a}-two")] {
        eventually(Duration::from_secs(20), || async {
            let cm = get(&cluster, &["get", "configmap", "cluster-info", "-n", &ns, "-o",
                "jsonpath={.data.region}|{.metadata.labels.copied-by}|{.metadata.labels.bulkhead\\.dev/replicated-by}|{.metadata.labels.bulkhead\\.dev/tenant}"]);
            let np = get(&cluster, &["get", "networkpolicy", "deny-all", "-n", &ns, "-o", "name"]);
            let want = format!("eu-west-1|platform|globaltenantresource..{gtr}|{a}");
            (cm == want && np == "networkpolicy.networking.k8s.io/deny-all")
                .then_some(())
                .ok_or(format!("{ns}: {cm:?} {np:?}"))
        })
        .await;
    }
    let b_ns = format!("{b}-one");
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmaps",
                "-n",
                &b_ns,
                "-l",
                "bulkhead.dev/replicated-by",
                "-o",
                "name"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "private",
                "-n",
                &format!("{a}-one"),
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    let status = get(
        &cluster,
        &[
            "get",
            "globaltenantresource",
            &gtr,
            "-o",
            "jsonpath={.status.conditions[0].status}|{.status.processedItems[*].kind}",
        ],
    );
    assert_eq!(status, "True|ConfigMap NetworkPolicy ConfigMap NetworkPolicy");
    let sample = format!(
        r#"bulkhead_replication_items{{kind="GlobalTenantResource",name="{gtr}",namespace="",state="applied"}}"#
    );
    assert_eq!(bulkhead.metric(&sample), Some(4.0));
    // The tenant's owner may edit its namespace's ConfigMaps, but not the copies.
    let a_one = format!("{a}-one");
    let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    eventually(Duration::from_secs(20), || async {
        let out = k.run(&["delete", "configmap", "cluster-info", "-n", &a_one]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the owner deleted a replicated ConfigMap");
        let want = format!(
            "configmap `cluster-info` is replicated by `globaltenantresource..{gtr}` and cannot be deleted by tenant users"
        );
        // Until the owner's RoleBinding exists, RBAC refuses first.
        err.contains(&want).then_some(()).ok_or(err)
    })
    .await;

    // Drift is repaired: a copy deleted or edited by hand comes back as it was.
    cluster
        .kubectl()
        .ok(&["delete", "networkpolicy", "deny-all", "-n", &a_one]);
    cluster.kubectl().ok(&[
        "patch",
        "configmap",
        "cluster-info",
        "-n",
        &a_one,
        "--type=merge",
        "-p",
        r#"{"data":{"region":"tampered"}}"#,
    ]);
    eventually(Duration::from_secs(20), || async {
        let np = get(
            &cluster,
            &[
                "get",
                "networkpolicy",
                "deny-all",
                "-n",
                &a_one,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        );
        let region = get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &a_one,
                "-o",
                "jsonpath={.data.region}",
            ],
        );
        (!np.is_empty() && region == "eu-west-1")
            .then_some(())
            .ok_or(format!("{np:?} {region:?}"))
    })
    .await;

    // The copies follow their source (at once: the source is watched).
    cluster.kubectl().ok(&[
        "patch",
        "configmap",
        "cluster-info",
        "-n",
        &platform,
        "--type=merge",
        "-p",
        r#"{"data":{"region":"us-east-2"}}"#,
    ]);
    eventually(Duration::from_secs(20), || async {
        let got = get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &format!("{a}-two"),
                "-o",
                "jsonpath={.data.region}",
            ],
        );
        (got == "us-east-2").then_some(()).ok_or(got)
    })
    .await;

    // A tenant that stops matching loses the copies; one that starts matching gets them.
    cluster.kubectl().ok(&[
        "label",
        "tenant",
        &a,
        &format!("e2e-replication={gtr}-out"),
        "--overwrite",
    ]);
    cluster.kubectl().ok(&[
        "label",
        "tenant",
        &b,
        &format!("e2e-replication={gtr}-in"),
        "--overwrite",
    ]);
    eventually(Duration::from_secs(20), || async {
        let gone = get(
            &cluster,
            &[
                "get",
                "configmaps,networkpolicies",
                "-n",
                &format!("{a}-one"),
                "-l",
                "bulkhead.dev/replicated-by",
                "-o",
                "name",
            ],
        );
        let arrived = get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &b_ns,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        );
        (gone.is_empty() && !arrived.is_empty())
            .then_some(())
            .ok_or(format!("left in a: {gone:?}; in b: {arrived:?}"))
    })
    .await;

    // Deleting the resource prunes what it made (pruningOnDelete defaults to true).
    cluster
        .kubectl()
        .ok(&["delete", "globaltenantresource", &gtr, "--wait=false"]);
    eventually(Duration::from_secs(20), || async {
        let left = get(
            &cluster,
            &[
                "get",
                "configmaps,networkpolicies",
                "-n",
                &b_ns,
                "-l",
                "bulkhead.dev/replicated-by",
                "-o",
                "name",
            ],
        );
        let resource = get(
            &cluster,
            &[
                "get",
                "globaltenantresource",
                &gtr,
                "-o",
                "name",
                "--ignore-not-found",
            ],
        );
        (left.is_empty() && resource.is_empty())
            .then_some(())
            .ok_or(format!("{left:?} {resource:?}"))
    })
    .await;
    // The source is untouched.
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "cluster-info",
                "-n",
                &platform,
                "-o",
                "jsonpath={.data.region}"
            ]
        ),
        "us-east-2"
    );
}

#[tokio::test]
async fn a_tenant_resource_writes_as_the_tenant_and_only_inside_it() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-tr-a"), cluster.unique("e2e-tr-b"));
    let free = cluster.unique("e2e-tr-free");
    let alice = cluster.unique("alice");
    let _bulkhead = start(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {a}}}
spec:
  owners: [{{kind: User, name: {alice}}}]
  additionalRoleBindings:
  - clusterRoleName: edit
    subjects: [{{kind: ServiceAccount, name: replicator, namespace: {a}-one}}]
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {b}}}
spec: {{owners: [{{kind: User, name: bob}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-one, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-two, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {b}-one, labels: {{bulkhead.dev/tenant: {b}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: b-secret-config, namespace: {b}-one}}
data: {{token: b-only}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {free}}}
"#
    ));
    let a_one = format!("{a}-one");
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: TenantResource
metadata: {{name: shared, namespace: {a_one}}}
spec:
  serviceAccount: {{name: replicator}}
  resyncPeriod: 1s
  resources:
  - rawItems:
    - {{apiVersion: v1, kind: ConfigMap, metadata: {{name: app-config, namespace: {b}-one}}, data: {{mode: tenant}}}}
    - {{apiVersion: rbac.authorization.k8s.io/v1, kind: ClusterRoleBinding, metadata: {{name: {a}-escalate}}, roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}, subjects: [{{kind: ServiceAccount, name: replicator, namespace: {a_one}}}]}}
    namespacedItems:
    - {{apiVersion: v1, kind: ConfigMap, namespace: {b}-one}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: TenantResource
metadata: {{name: stray, namespace: {free}}}
spec:
  resources:
  - rawItems: [{{apiVersion: v1, kind: ConfigMap, metadata: {{name: stray}}, data: {{x: "1"}}}}]
"#
    ));
    // Lands in both of tenant A's namespaces (the raw item's namespace is ignored), never in B's.
    for ns in [a_one.clone(), format!("{a}-two")] {
        eventually(Duration::from_secs(20), || async {
            let got = get(
                &cluster,
                &[
                    "get",
                    "configmap",
                    "app-config",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.data.mode}",
                ],
            );
            (got == "tenant").then_some(()).ok_or(format!("{ns}: {got:?}"))
        })
        .await;
    }
    let b_one = format!("{b}-one");
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "app-config",
                "-n",
                &b_one,
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "clusterrolebinding",
                &format!("{a}-escalate"),
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "b-secret-config",
                "-n",
                &a_one,
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    // Only the TenantResource's ServiceAccount writes the copies; the tenant's owner cannot edit them.
    let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    eventually(Duration::from_secs(20), || async {
        let out = k.run(&["label", "configmap", "app-config", "-n", &a_one, "edited=yes"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the owner changed a replicated ConfigMap");
        err.contains(&format!("is replicated by `tenantresource.{a_one}.shared`"))
            .then_some(())
            .ok_or(err)
    })
    .await;
    // The status says why the rest was not done.
    eventually(Duration::from_secs(20), || async {
        let status = get(
            &cluster,
            &[
                "get",
                "tenantresource",
                "shared",
                "-n",
                &a_one,
                "-o",
                "jsonpath={.status.conditions[0].status}|{.status.conditions[0].message}",
            ],
        );
        let ok = status.starts_with("False|")
            && status.contains(
                &format!("ClusterRoleBinding {a}-escalate: is cluster-scoped: a TenantResource writes only into its tenant's namespaces"),
            )
            && status.contains(&format!("cannot read v1 ConfigMap in namespace `{b_one}`"));
        ok.then_some(()).ok_or(status)
    })
    .await;
    eventually(Duration::from_secs(20), || async {
        let status = get(
            &cluster,
            &[
                "get",
                "tenantresource",
                "stray",
                "-n",
                &free,
                "-o",
                "jsonpath={.status.conditions[0].message}",
            ],
        );
        status
            .contains(&format!("namespace `{free}` is not part of a tenant"))
            .then_some(())
            .ok_or(status)
    })
    .await;
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "stray",
                "-n",
                &free,
                "-o",
                "name",
                "--ignore-not-found"
            ]
        ),
        ""
    );
    // Deleted while Bulkhead runs, a TenantResource goes once Bulkhead has pruned its copies. Left for
    // the end of the test, its finalizer would outlive Bulkhead and keep its namespace Terminating on a
    // real API server (docs/replication.md says so for uninstalling).
    for (name, ns) in [("shared", &a_one), ("stray", &free)] {
        cluster
            .kubectl()
            .ok(&["delete", "tenantresource", name, "-n", ns, "--timeout=30s"]);
    }
}

/// The chart's RBAC plus what the templated resources below write (an administrator adds such rules
/// through `replication.extraRules`, as docs/replication.md says).
const ARGO_RULES: &str = r#"replication.extraRules=[{"apiGroups":["argoproj.io"],"resources":["appprojects"],"verbs":["get","list","watch","create","patch","update","delete"]}]"#;

/// Installs Argo CD's AppProject CRD and starts Bulkhead with the chart's RBAC plus [`ARGO_RULES`].
async fn start_writing_app_projects(cluster: &Cluster) -> Bulkhead {
    cluster.install_argo_cd_projects();
    let lease = cluster.unique("e2e-rep-lease");
    let bulkhead = Bulkhead::start_with_chart(
        cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
        &[ARGO_RULES],
    );
    bulkhead.wait_ready().await;
    bulkhead
}

#[tokio::test]
async fn templates_make_an_argo_cd_project_per_tenant_and_adopt_only_when_told() {
    let cluster = Cluster::start().await;
    let (a, b) = (cluster.unique("e2e-tpl-a"), cluster.unique("e2e-tpl-b"));
    let (argo, platform) = (cluster.unique("e2e-argocd"), cluster.unique("e2e-tpl-platform"));
    let (projects, settings) = (cluster.unique("e2e-projects"), cluster.unique("e2e-settings"));
    let bulkhead = start_writing_app_projects(&cluster).await;
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {argo}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {platform}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: defaults, namespace: {platform}}}
data: {{region: eu-west-1}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {a}, labels: {{e2e-templates: {projects}}}}}
spec:
  owners: [{{kind: User, name: alice}}]
  data: {{repos: ["https://git.example/{a}.git"]}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {b}}}
spec: {{owners: [{{kind: User, name: bob}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-one, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {a}-two, labels: {{bulkhead.dev/tenant: {a}}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {b}-one, labels: {{bulkhead.dev/tenant: {b}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: team-settings, namespace: {a}-one}}
data: {{owner: the-team}}
"#
    ));
    // One AppProject per selected tenant, in Argo CD's namespace, from a Go template over the tenant.
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: GlobalTenantResource
metadata: {{name: {projects}}}
spec:
  scope: Tenant
  tenantSelector: {{matchLabels: {{e2e-templates: {projects}}}}}
  resources:
  - generators:
    - missingKey: error
      template: |
        apiVersion: argoproj.io/v1alpha1
        kind: AppProject
        metadata:
          name: {{{{ $.tenant.metadata.name }}}}
          namespace: {argo}
        spec:
          sourceRepos: {{{{ toJson $.tenant.spec.data.repos }}}}
          destinations:
          {{{{- range $.tenant.status.namespaces }}}}
          - {{server: https://kubernetes.default.svc, namespace: {{{{ . }}}}}}
          {{{{- end }}}}
"#
    ));
    let project = |tenant: &str| {
        {
            get(
                &cluster,
                &[
                    "get",
                    "appproject",
                    tenant,
                    "-n",
                    &argo,
                    "--ignore-not-found",
                    "-o",
                    "jsonpath={.spec.sourceRepos[*]}|{.spec.destinations[*].namespace}|{.metadata.labels.bulkhead\\.dev/tenant}",
                ],
            )
        }
    };
    eventually(Duration::from_secs(30), || async {
        let got = project(&a);
        let want = format!("https://git.example/{a}.git|{a}-one {a}-two|{a}");
        (got == want).then_some(()).ok_or(got)
    })
    .await;
    assert_eq!(project(&b), "", "a tenant the selector leaves out got a project");
    // A new namespace of the tenant becomes a destination.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {a}-three, labels: {{bulkhead.dev/tenant: {a}}}}}\n"
    ));
    eventually(Duration::from_secs(30), || async {
        let got = project(&a);
        got.contains(&format!("|{a}-one {a}-three {a}-two|"))
            .then_some(())
            .ok_or(got)
    })
    .await;

    // Per namespace: context objects and the short form; an object made by someone else is left alone
    // until adoption is asked for.
    let settings_gtr = |adopt: bool| {
        format!(
            r#"apiVersion: bulkhead.dev/v1alpha1
kind: GlobalTenantResource
metadata: {{name: {settings}}}
spec:
  tenantSelector: {{matchLabels: {{e2e-templates: {projects}}}}}
  settings: {{adopt: {adopt}}}
  resyncPeriod: 10m  # a context change must arrive through its watch, not a resync
  resources:
  - namespaceSelector: {{matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{a}-one, {a}-two]}}]}}
    context:
      resources:
      - {{index: defaults, apiVersion: v1, kind: ConfigMap, namespace: {platform}, name: defaults, optional: false}}
    generators:
    - template: |
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: team-settings}}
        data:
          region: {{{{ $.defaults.data.region }}}}
          namespace: {{{{ $.namespace.metadata.name }}}}
    rawItems:
    - apiVersion: v1
      kind: ConfigMap
      metadata: {{name: '{{{{tenant.name}}}}-{{{{namespace}}}}-info'}}
      data: {{tenant: '{{{{tenant.name}}}}'}}
"#
        )
    };
    cluster.apply(&settings_gtr(false));
    let cm = |ns: String, name: &str| {
        {
            get(
                &cluster,
                &[
                    "get",
                    "configmap",
                    name,
                    "-n",
                    &ns,
                    "--ignore-not-found",
                    "-o",
                    "jsonpath={.data.owner}|{.data.region}|{.data.namespace}|{.metadata.labels.bulkhead\\.dev/replicated-by}",
                ],
            )
        }
    };
    let owner = format!("globaltenantresource..{settings}");
    eventually(Duration::from_secs(30), || async {
        let two = cm(format!("{a}-two"), "team-settings");
        let info = get(&cluster, &["get", "configmap", &format!("{a}-{a}-one-info"), "-n", &format!("{a}-one"),
            "--ignore-not-found", "-o", "jsonpath={.data.tenant}"]);
        let status = get(&cluster, &["get", "globaltenantresource", &settings, "-o",
            "jsonpath={.status.conditions[0].status}|{.status.conditions[0].message}"]);
        let ok = two == format!("|eu-west-1|{a}-two|{owner}")
            && info == a
            && status.starts_with("False|")
            && status.contains(&format!(
                "ConfigMap {a}-one/team-settings: exists and was not made by this GlobalTenantResource: set settings.adopt to manage it"
            ));
        ok.then_some(()).ok_or(format!("{two:?} {info:?} {status:?}"))
    })
    .await;
    assert_eq!(
        cm(format!("{a}-one"), "team-settings"),
        "the-team|||",
        "changed without adopt"
    );
    cluster.apply(&settings_gtr(true));
    eventually(Duration::from_secs(30), || async {
        let one = cm(format!("{a}-one"), "team-settings");
        (one == format!("the-team|eu-west-1|{a}-one|{owner}"))
            .then_some(())
            .ok_or(one)
    })
    .await;
    // The adoption is marked on the object itself, so that pruning gives it back even if the
    // resource's status never recorded it.
    let adopted_mark = || {
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "team-settings",
                "-n",
                &format!("{a}-one"),
                "-o",
                r"jsonpath={.metadata.annotations.bulkhead\.dev/adopted}",
            ],
        )
    };
    assert_eq!(adopted_mark(), "true");
    // A context object changes: what was rendered from it follows, through the watch of what the
    // last reconcile read.
    cluster.kubectl().ok(&[
        "patch",
        "configmap",
        "defaults",
        "-n",
        &platform,
        "--type=merge",
        "-p",
        r#"{"data":{"region":"eu-central-1"}}"#,
    ]);
    eventually(Duration::from_secs(30), || async {
        let two = cm(format!("{a}-two"), "team-settings");
        (two == format!("|eu-central-1|{a}-two|{owner}"))
            .then_some(())
            .ok_or(two)
    })
    .await;
    // Deleted: what it made goes, what it adopted stays as it was before.
    cluster
        .kubectl()
        .ok(&["delete", "globaltenantresource", &settings, "--timeout=30s"]);
    eventually(Duration::from_secs(30), || async {
        let one = cm(format!("{a}-one"), "team-settings");
        let two = cm(format!("{a}-two"), "team-settings");
        (one == "the-team|||" && two.is_empty())
            .then_some(())
            .ok_or(format!("{one:?} {two:?}"))
    })
    .await;
    assert_eq!(
        adopted_mark(),
        "",
        "the mark goes with the rest of what replication set"
    );

    // dependsOn holds a resource back until what it names is Ready; cordoned freezes it.
    let later = cluster.unique("e2e-later");
    let later_gtr = |depends: &str, cordoned: bool, items: &str| {
        format!(
            r#"apiVersion: bulkhead.dev/v1alpha1
kind: GlobalTenantResource
metadata: {{name: {later}}}
spec:
  tenantSelector: {{matchLabels: {{e2e-templates: {projects}}}}}
  dependsOn: [{{name: {depends}}}]
  cordoned: {cordoned}
  resources:
  - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {a}-one}}}}
    rawItems: {items}
"#
        )
    };
    let item = "[{apiVersion: v1, kind: ConfigMap, metadata: {name: later}, data: {a: b}}]";
    let later_state = || {
        let status = get(
            &cluster,
            &[
                "get",
                "globaltenantresource",
                &later,
                "-o",
                "jsonpath={.status.conditions[0].reason}|{.status.conditions[0].message}",
            ],
        );
        let cm = get(
            &cluster,
            &[
                "get",
                "configmap",
                "later",
                "-n",
                &format!("{a}-one"),
                "--ignore-not-found",
                "-o",
                "name",
            ],
        );
        format!("{status}|{cm}")
    };
    cluster.apply(&later_gtr("e2e-nothing-by-this-name", false, item));
    eventually(Duration::from_secs(30), || async {
        let got = later_state();
        (got == "DependencyNotReady|waits for `e2e-nothing-by-this-name` does not exist|")
            .then_some(())
            .ok_or(got)
    })
    .await;
    cluster.apply(&later_gtr(&projects, false, item));
    eventually(Duration::from_secs(30), || async {
        let got = later_state();
        (got == "Replicated|every item is applied|configmap/later")
            .then_some(())
            .ok_or(got)
    })
    .await;
    cluster.apply(&later_gtr(&projects, true, "[]"));
    eventually(Duration::from_secs(30), || async {
        let got = later_state();
        got.starts_with("Cordoned|cordoned: nothing is applied or deleted")
            .then_some(())
            .ok_or(got)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        later_state().ends_with("|configmap/later"),
        "a cordoned resource pruned"
    );
    cluster.apply(&later_gtr(&projects, false, "[]"));
    eventually(Duration::from_secs(30), || async {
        let got = later_state();
        (got == "Replicated|every item is applied|")
            .then_some(())
            .ok_or(got)
    })
    .await;
    cluster
        .kubectl()
        .ok(&["delete", "globaltenantresource", &later, "--timeout=30s"]);

    // A TenantResource's templates stay inside its tenant, and never write cluster-scoped objects
    // (CVE-2026-22872), whatever its scope.
    cluster.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: replicator, namespace: {a}-one}}
subjects: [{{kind: ServiceAccount, name: default, namespace: {a}-one}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: TenantResource
metadata: {{name: escape, namespace: {a}-one}}
spec:
  scope: Tenant
  resources:
  - generators:
    - template: |
        apiVersion: rbac.authorization.k8s.io/v1
        kind: ClusterRole
        metadata: {{name: {{{{ $.tenant.metadata.name }}}}-everything}}
        rules: [{{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}}]
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: planted, namespace: {b}-one}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {{name: inside}}
        data: {{tenant: {{{{ $.tenant.metadata.name }}}}}}
"#
    ));
    eventually(Duration::from_secs(30), || async {
        let status = get(&cluster, &["get", "tenantresource", "escape", "-n", &format!("{a}-one"), "-o",
            "jsonpath={.status.conditions[0].message}"]);
        let inside = get(&cluster, &["get", "configmap", "inside", "-n", &format!("{a}-one"),
            "--ignore-not-found", "-o", "jsonpath={.data.tenant}"]);
        let ok = inside == a
            && status.contains(&format!("ClusterRole {a}-everything: is cluster-scoped: a TenantResource writes only into its tenant's namespaces"))
            && status.contains(&format!("ConfigMap {b}-one/planted: names namespace `{b}-one`, which is not one of the tenant's"));
        ok.then_some(()).ok_or(format!("{inside:?} {status:?}"))
    })
    .await;
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "clusterrole",
                &format!("{a}-everything"),
                "--ignore-not-found",
                "-o",
                "name"
            ]
        ),
        ""
    );
    assert_eq!(
        get(
            &cluster,
            &[
                "get",
                "configmap",
                "planted",
                "-n",
                &format!("{b}-one"),
                "--ignore-not-found",
                "-o",
                "name"
            ]
        ),
        ""
    );

    // A tenant the selector stops matching loses its project.
    cluster.kubectl().ok(&["label", "tenant", &a, "e2e-templates-"]);
    eventually(Duration::from_secs(30), || async {
        let got = project(&a);
        got.is_empty().then_some(()).ok_or(got)
    })
    .await;
    for (kind, name, ns) in [
        ("tenantresource", "escape", Some(format!("{a}-one"))),
        ("globaltenantresource", projects.as_str(), None),
    ] {
        let mut args = vec!["delete", kind, name, "--timeout=30s"];
        if let Some(ns) = &ns {
            args.extend(["-n", ns.as_str()]);
        }
        cluster.kubectl().ok(&args);
    }
    drop(bulkhead);
}

/// `examples/platform/` as a platform team would apply it: the shared namespaces, the platform's
/// GlobalTenantResources, one team's Tenant. The team then works as itself.
#[tokio::test]
async fn the_platform_example_onboards_a_team() {
    let cluster = Cluster::start().await;
    let bulkhead = start_writing_app_projects(&cluster).await;
    let example = |file: &str| {
        std::fs::read_to_string(format!(
            "{}/../../examples/platform/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("the example exists")
    };
    cluster.apply(&example("00-cluster.yaml"));
    cluster.apply(&example("10-platform.yaml"));
    // The Tenant only: the rest of the file is what the team does, done below as the team.
    let team = example("20-team-comet.yaml");
    let tenant = team.split("\n---\n").next().unwrap_or_default();
    cluster.apply(tenant);
    let project = || {
        get(
            &cluster,
            &[
                "get",
                "appproject",
                "comet",
                "-n",
                "argocd",
                "--ignore-not-found",
                "-o",
                "jsonpath={.spec.destinations[*].namespace}|{.spec.sourceRepos[*]}|{.spec.roles[0].groups[*]}",
            ],
        )
    };
    // The default namespace, with the team's metadata, and the platform's objects in it.
    eventually(Duration::from_secs(60), || async {
        let ns = get(&cluster, &["get", "namespace", "comet-dev", "--ignore-not-found", "-o",
            "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}|{.metadata.labels.team}|{.metadata.labels.env}"]);
        let np = get(&cluster, &["get", "networkpolicy", "tenant-isolation", "-n", "comet-dev", "--ignore-not-found", "-o",
            "jsonpath={.spec.ingress[0].from[0].namespaceSelector.matchLabels.bulkhead\\.dev/tenant}"]);
        let cm = get(&cluster, &["get", "configmap", "cluster-info", "-n", "comet-dev", "--ignore-not-found", "-o",
            "jsonpath={.data.cluster}"]);
        let got = format!("{ns}|{np}|{cm}|{}", project());
        let want = "comet|comet|dev|comet|prod-eu-1|comet-dev|https://git.example.com/comet/deploy.git https://git.example.com/comet/charts.git|comet-devs";
        (got == want).then_some(()).ok_or(got)
    })
    .await;
    // A member of the team adds a namespace: it becomes a destination of the team's project.
    let ann = cluster.kubectl_as("ann", &["bulkhead.dev", "comet-devs"]);
    ann.ok(&["create", "namespace", "comet-staging"]);
    eventually(Duration::from_secs(60), || async {
        let got = project();
        got.starts_with("comet-dev comet-staging|")
            .then_some(())
            .ok_or(got)
    })
    .await;
    // Hostnames outside the team's names are refused.
    let ingress = team.split("\n---\n").nth(2).unwrap_or_default();
    let path = std::env::temp_dir().join(format!("{}.yaml", cluster.unique("e2e-comet-ingress")));
    std::fs::write(&path, ingress).expect("a temporary file");
    let out = ann.run(&["create", "-f", path.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the team took shop.example.com");
    assert!(
        err.contains("hostname `shop.example.com` of ingress `shop` is not allowed in tenant `comet`"),
        "{err}"
    );
    for gtr in ["argo-cd-projects", "tenant-isolation", "cluster-metadata"] {
        cluster
            .kubectl()
            .ok(&["delete", "globaltenantresource", gtr, "--timeout=30s"]);
    }
    assert_eq!(project(), "", "the project outlived its GlobalTenantResource");
    for ns in ["comet-staging", "comet-dev"] {
        cluster.kubectl().ok(&["delete", "namespace", ns, "--wait=false"]);
    }
    drop(bulkhead);
}
