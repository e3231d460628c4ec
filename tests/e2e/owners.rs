//! Owners beyond `spec.owners` (Capsule v0.15): TenantOwners a Tenant chooses by label
//! (`permissions.matchOwners`, or the `projectcapsule.dev/tenant` label), listed in `status.owners`,
//! bound in every tenant namespace and seen as owners by the webhook; and ServiceAccounts an owner
//! promotes with the `owner.projectcapsule.dev/promote` label.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::controller::bindings;
use crate::harness::{Bulkhead, Cluster, Kubectl, eventually};
use crate::rules::{names, two_namespace_tenant};

/// `status.owners` as `kind name [roles]` lines.
fn status_owners(cluster: &Cluster, tenant: &str) -> String {
    cluster.kubectl().ok(&[
        "get",
        "tenant",
        tenant,
        "-o",
        r#"jsonpath={range .status.owners[*]}{.kind} {.name} {.clusterRoles}{"\n"}{end}"#,
    ])
}

/// `who` creates namespace `ns` (retried while the webhook has yet to see its ownership), and it is
/// assigned to `tenant`.
async fn creates_namespace_of(cluster: &Cluster, who: &Kubectl, ns: &str, tenant: &str) {
    cluster.clean_up(&["namespace", ns]);
    eventually(Duration::from_secs(60), || async {
        let out = who.run(&["create", "namespace", ns]);
        out.status
            .success()
            .then_some(())
            .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    let label = cluster.kubectl().ok(&[
        "get",
        "namespace",
        ns,
        "-o",
        "jsonpath={.metadata.labels.bulkhead\\.dev/tenant}",
    ]);
    assert_eq!(label, tenant);
}

fn configuration(promotion: bool) -> String {
    format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {{name: default}}\nspec:\n  userGroups: [bulkhead.dev]\n  bindableClusterRoles: [admin, edit, view, bulkhead-namespace-deleter]\n  allowServiceAccountPromotion: {promotion}\n"
    )
}

async fn start(cluster: &Cluster, prefix: &str, promotion: bool) -> Option<Bulkhead> {
    if cluster.has_configuration() {
        return None;
    }
    cluster.apply(&configuration(promotion));
    let lease = cluster.unique(&format!("{prefix}-lease"));
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    Some(bulkhead)
}

#[tokio::test]
async fn tenant_owners_chosen_by_label_own_the_tenant() {
    let cluster = Cluster::start().await;
    let Some(_bulkhead) = start(&cluster, "e2e-owners", false).await else {
        return;
    };
    let tenant = cluster.unique("e2e-owners");
    let (alice, joe, devs) = (
        cluster.unique("alice"),
        cluster.unique("joe"),
        cluster.unique("devs"),
    );
    let team = cluster.unique("team");
    let ns = format!("{tenant}-a");
    cluster.clean_up(&["tenant", &tenant]);
    cluster.clean_up(&["namespace", &ns]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  permissions:\n    matchOwners: [{{matchLabels: {{team: {team}}}}}]\n  namespaceOptions: {{defaultNamespaces: [{{name: {ns}}}]}}\n"
    ));
    // Joe by the tenant's selector, with the roles his TenantOwner names; the devs group by Capsule's
    // label naming the tenant, with the default roles; mallory's TenantOwner matches nothing.
    let joe_owner = |labels: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: TenantOwner\nmetadata: {{name: {joe}, labels: {{{labels}}}}}\nspec: {{kind: User, name: {joe}, clusterRoles: [view]}}\n"
        )
    };
    cluster.apply(&joe_owner(&format!("team: {team}")));
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: TenantOwner\nmetadata: {{name: {devs}, labels: {{projectcapsule.dev/tenant: {tenant}}}}}\nspec: {{kind: Group, name: {devs}}}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: TenantOwner\nmetadata: {{name: {devs}-other, labels: {{team: someone-else}}}}\nspec: {{kind: User, name: {devs}-mallory}}\n"
    ));
    let want_status = format!(
        "User {alice} [\"admin\",\"bulkhead-namespace-deleter\"]\nUser {joe} [\"view\"]\nGroup {devs} [\"admin\",\"bulkhead-namespace-deleter\"]"
    );
    let want_bindings = BTreeSet::from([
        ("admin".to_owned(), "User".to_owned(), alice.clone()),
        (
            "bulkhead-namespace-deleter".to_owned(),
            "User".to_owned(),
            alice.clone(),
        ),
        ("view".to_owned(), "User".to_owned(), joe.clone()),
        ("admin".to_owned(), "Group".to_owned(), devs.clone()),
        (
            "bulkhead-namespace-deleter".to_owned(),
            "Group".to_owned(),
            devs.clone(),
        ),
    ]);
    eventually(Duration::from_secs(60), || async {
        let status = status_owners(&cluster, &tenant);
        let got = bindings(&cluster, &ns).await;
        (status.trim() == want_status && got == want_bindings)
            .then_some(())
            .ok_or(format!("status:\n{status}\nbindings: {got:?}"))
    })
    .await;

    // The webhook takes the listed owners as owners: Joe's namespace is his tenant's.
    let joe_kubectl = cluster.kubectl_as(&joe, &["bulkhead.dev"]);
    creates_namespace_of(&cluster, &joe_kubectl, &format!("{tenant}-joe"), &tenant).await;

    // A ServiceAccount TenantOwner (aggregate, the default) from outside the tenant is a tenant user:
    // the provisioner role lets it create namespaces, which are its tenant's; one no tenant chose
    // gets the role too, and its namespace is refused, never left unmanaged.
    let robots = cluster.unique("e2e-owner-robots");
    cluster.kubectl().ok(&["create", "namespace", &robots]);
    cluster.clean_up(&["namespace", &robots]);
    let account = |name: &str, labels: &str| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: TenantOwner\nmetadata: {{name: {robots}-{name}, labels: {{{labels}}}}}\nspec: {{kind: ServiceAccount, name: 'system:serviceaccount:{robots}:{name}'}}\n"
        )
    };
    cluster.apply(&account("chosen", &format!("team: {team}")));
    cluster.apply(&account("unchosen", "team: nobody"));
    let as_account = |name: &str| {
        cluster.kubectl_as(
            &format!("system:serviceaccount:{robots}:{name}"),
            &[
                "system:serviceaccounts",
                &format!("system:serviceaccounts:{robots}"),
            ],
        )
    };
    creates_namespace_of(
        &cluster,
        &as_account("chosen"),
        &format!("{tenant}-robot"),
        &tenant,
    )
    .await;
    let stray = format!("{robots}-stray");
    cluster.clean_up(&["namespace", &stray]);
    eventually(Duration::from_secs(60), || async {
        let out = as_account("unchosen").run(&["create", "namespace", &stray]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        // Refused by the webhook (not by RBAC: the provisioner role is bound to it).
        (!out.status.success() && err.contains("no tenant assigned to you"))
            .then_some(())
            .ok_or(err)
    })
    .await;

    // Relabelled away, Joe is no owner any more: his RoleBinding goes and he creates no namespace.
    cluster.apply(&joe_owner("team: elsewhere"));
    eventually(Duration::from_secs(60), || async {
        let status = status_owners(&cluster, &tenant);
        let got = bindings(&cluster, &ns).await;
        let gone = !status.contains(&joe) && !got.iter().any(|(_, _, who)| who == &joe);
        gone.then_some(())
            .ok_or(format!("status:\n{status}\nbindings: {got:?}"))
    })
    .await;
    let out =
        cluster
            .kubectl_as(&joe, &["bulkhead.dev"])
            .run(&["create", "namespace", &format!("{tenant}-joe2")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "joe still creates namespaces");
    assert!(
        err.contains(&format!("no tenant assigned to you: `{joe}`")),
        "{err}"
    );
}

#[tokio::test]
async fn owners_promote_service_accounts_and_nobody_else_does() {
    let cluster = Cluster::start().await;
    let Some(_bulkhead) = start(&cluster, "e2e-promote", true).await else {
        return;
    };
    let tenant = cluster.unique("e2e-promote");
    let (alice, bob, carol) = (
        cluster.unique("alice"),
        cluster.unique("bob"),
        cluster.unique("carol"),
    );
    let ns = format!("{tenant}-a");
    cluster.clean_up(&["tenant", &tenant]);
    cluster.clean_up(&["namespace", &ns]);
    let spec = |allow: bool| {
        format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {tenant}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  additionalRoleBindings: [{{clusterRoleName: edit, subjects: [{{kind: User, name: {bob}, apiGroup: rbac.authorization.k8s.io}}, {{kind: User, name: {carol}, apiGroup: rbac.authorization.k8s.io}}, {{kind: ServiceAccount, name: robot, namespace: {ns}}}]}}]\n  permissions: {{promotions: {{allowOwnerPromotion: {allow}}}}}\n  namespaceOptions: {{defaultNamespaces: [{{name: {ns}}}]}}\n"
        )
    };
    cluster.apply(&spec(true));
    let robot = format!("system:serviceaccount:{ns}:robot");
    eventually(Duration::from_secs(60), || async {
        let got = bindings(&cluster, &ns).await;
        got.contains(&("edit".to_owned(), "User".to_owned(), bob.clone()))
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    cluster
        .kubectl()
        .ok(&["create", "serviceaccount", "robot", "-n", &ns]);
    cluster
        .kubectl()
        .ok(&["create", "serviceaccount", "robot2", "-n", &ns]);
    let label_as = |user: &str, groups: &[&str], account: &str, value: &str| {
        cluster.kubectl_as(user, groups).run(&[
            "label",
            "--overwrite",
            "serviceaccount",
            account,
            "-n",
            &ns,
            &format!("owner.projectcapsule.dev/promote={value}"),
        ])
    };
    let refused = |out: std::process::Output| {
        assert!(!out.status.success(), "the label was admitted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Bob may edit ServiceAccounts in the namespace (so may the robot), but is no owner.
    let err = refused(label_as(&bob, &["bulkhead.dev"], "robot", "true"));
    assert!(
        err.contains(&format!(
            "serviceaccount `robot`: only an owner of tenant `{tenant}` may set or remove the label `owner.projectcapsule.dev/promote`"
        )),
        "{err}"
    );
    // Nor is Carol, who is no tenant user at all (not in userGroups) but may edit there too.
    let err = refused(label_as(&carol, &[], "robot", "true"));
    assert!(
        err.contains(&format!("only an owner of tenant `{tenant}` may set or remove")),
        "{err}"
    );
    let err = refused(label_as(&alice, &["bulkhead.dev"], "robot", "yes"));
    assert!(err.contains("may only be \"true\""), "{err}");
    let out = label_as(&alice, &["bulkhead.dev"], "robot", "true");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(Duration::from_secs(60), || async {
        let status = status_owners(&cluster, &tenant);
        let got = bindings(&cluster, &ns).await;
        let listed = status.contains(&format!(
            "ServiceAccount {robot} [\"bulkhead-namespace-deleter\"]"
        ));
        let bound = got.contains(&(
            "bulkhead-namespace-deleter".to_owned(),
            "ServiceAccount".to_owned(),
            "robot".to_owned(),
        ));
        (listed && bound)
            .then_some(())
            .ok_or(format!("status:\n{status}\nbindings: {got:?}"))
    })
    .await;
    // The promoted account creates the tenant's namespaces, and promotes nobody.
    let sa_groups = ["system:serviceaccounts", &format!("system:serviceaccounts:{ns}")];
    let sa_groups: Vec<&str> = sa_groups.iter().map(|g| g.as_ref()).collect();
    let robot_kubectl = cluster.kubectl_as(&robot, &sa_groups);
    creates_namespace_of(&cluster, &robot_kubectl, &format!("{tenant}-robot"), &tenant).await;
    let err = refused(label_as(&robot, &sa_groups, "robot2", "true"));
    assert!(err.contains("a promoted account may not promote others"), "{err}");

    // The tenant withdraws promotion: the account is no owner, and no new promotion is admitted.
    cluster.apply(&spec(false));
    eventually(Duration::from_secs(60), || async {
        let status = status_owners(&cluster, &tenant);
        (!status.contains(&robot)).then_some(()).ok_or(status)
    })
    .await;
    let err = refused(label_as(&alice, &["bulkhead.dev"], "robot2", "true"));
    assert!(
        err.contains(&format!(
            "serviceaccount `robot2` cannot be promoted to owner of tenant `{tenant}`: tenant `{tenant}` does not allow it"
        )),
        "{err}"
    );
    let out =
        cluster
            .kubectl_as(&robot, &sa_groups)
            .run(&["create", "namespace", &format!("{tenant}-robot2")]);
    assert!(
        !out.status.success(),
        "a demoted account still creates namespaces"
    );
    // Removing the label is an owner's to do, and is admitted.
    let out = cluster.kubectl_as(&alice, &["bulkhead.dev"]).run(&[
        "label",
        "serviceaccount",
        "robot",
        "-n",
        &ns,
        "owner.projectcapsule.dev/promote-",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let labels = cluster.kubectl().ok(&[
        "get",
        "serviceaccount",
        "robot",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!labels.contains("promote"), "{labels}");
}

#[tokio::test]
async fn rule_promotions_bind_promoted_service_accounts_in_the_rules_namespaces() {
    let cluster = Cluster::start().await;
    let Some(_bulkhead) = start(&cluster, "e2e-rule-promote", true).await else {
        return;
    };
    let (tenant, alice, test, prod) = names(&cluster, "e2e-rpromo");
    // Capsule's documentation (203-tenant-solar.yaml), with cluster roles the chart lets Bulkhead bind.
    cluster.apply(&two_namespace_tenant(
        (&tenant, &alice, &test, &prod),
        "env",
        r#"
  - permissions:
      promotions:
      - clusterRoles: [view]
      - clusterRoles: [edit]
        selector: {matchLabels: {super: account}}
  - namespaceSelector:
      matchExpressions: [{key: env, operator: In, values: [prod]}]
    permissions:
      promotions:
      - clusterRoles: [admin]
"#,
    ));
    eventually(Duration::from_secs(60), || async {
        let got = bindings(&cluster, &test).await;
        (!got.is_empty())
            .then_some(())
            .ok_or("no bindings yet".to_owned())
    })
    .await;
    cluster
        .kubectl()
        .ok(&["create", "serviceaccount", "gitops", "-n", &test]);
    cluster
        .kubectl()
        .ok(&["label", "serviceaccount", "gitops", "-n", &test, "super=account"]);
    let label = |who: &str, groups: &[&str]| {
        cluster.kubectl_as(who, groups).run(&[
            "label",
            "serviceaccount",
            "gitops",
            "-n",
            &test,
            "projectcapsule.dev/promote=true",
        ])
    };
    // Not by someone who owns nothing here.
    let out = label(&cluster.unique("mallory"), &["bulkhead.dev", "system:masters"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a non-owner promoted");
    assert!(
        err.contains(&format!(
            "serviceaccount `gitops`: only an owner of tenant `{tenant}` may set or remove the label `projectcapsule.dev/promote`"
        )),
        "{err}"
    );
    let out = label(&alice, &["bulkhead.dev"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sa = |role: &str| (role.to_owned(), "ServiceAccount".to_owned(), "gitops".to_owned());
    eventually(Duration::from_secs(60), || async {
        let t: BTreeSet<_> = bindings(&cluster, &test)
            .await
            .into_iter()
            .filter(|(_, _, who)| who == "gitops")
            .collect();
        let p: BTreeSet<_> = bindings(&cluster, &prod)
            .await
            .into_iter()
            .filter(|(_, _, who)| who == "gitops")
            .collect();
        let ok = t == BTreeSet::from([sa("view"), sa("edit")])
            && p == BTreeSet::from([sa("view"), sa("edit"), sa("admin")]);
        ok.then_some(()).ok_or(format!("test {t:?} prod {p:?}"))
    })
    .await;
    // Demoted: the bindings go.
    let out = cluster.kubectl_as(&alice, &["bulkhead.dev"]).run(&[
        "label",
        "serviceaccount",
        "gitops",
        "-n",
        &test,
        "projectcapsule.dev/promote-",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually(Duration::from_secs(60), || async {
        let left: Vec<_> = bindings(&cluster, &prod)
            .await
            .into_iter()
            .filter(|(_, _, who)| who == "gitops")
            .collect();
        left.is_empty().then_some(()).ok_or(format!("{left:?}"))
    })
    .await;
}
