//! CustomQuota and GlobalCustomQuota with Capsule's meaning: objects of any kind counted (1 each, or
//! the quantities a JSONPath finds), writes over the limit refused on create and on update, usage and
//! counted objects in the status, and room reserved at admission so that concurrent creates never pass
//! the limit together (the overshoot is measured here: it must be 0), through a webhook restart too.

use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;

use crate::harness::{Bulkhead, Cluster, eventually};

async fn start(cluster: &Cluster, prefix: &str, extra: &[&str]) -> Bulkhead {
    let lease = cluster.unique(&format!("{prefix}-lease"));
    let mut args = vec!["--lease-namespace", "default", "--lease-name", &lease];
    args.extend_from_slice(extra);
    let bulkhead = Bulkhead::start(cluster, &args);
    bulkhead.wait_ready().await;
    bulkhead
}

/// Waits until the quota's Ready condition is True and the webhook is asked about the kinds it
/// counts (the hook's rules are in Bulkhead's configuration, and the API server has had a moment to
/// load them).
async fn quota_ready(cluster: &Cluster, bulkhead: &Bulkhead, what: &[&str]) {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend([
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
    ]);
    eventually(Duration::from_secs(60), || async {
        let out = cluster.kubectl().run(&args);
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        (status == "True").then_some(()).ok_or(format!(
            "Ready is `{status}`: {}",
            cluster
                .kubectl()
                .run(&[&["get"], what, &["-o", "yaml"]].concat())
                .stdout
                .len()
        ))
    })
    .await;
    if let Some(name) = &bulkhead.webhook_configuration {
        eventually(Duration::from_secs(30), || async {
            let rules = hook_rules(cluster, name, "");
            (!rules.is_empty()).then_some(()).ok_or("no rules yet".to_owned())
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// The CustomQuota hook's rules in the webhook configuration `name`, at `field` below them.
fn hook_rules(cluster: &Cluster, name: &str, field: &str) -> String {
    cluster.kubectl().ok(&[
        "get",
        "validatingwebhookconfiguration",
        name,
        "-o",
        &format!(r#"jsonpath={{.webhooks[?(@.name=="customquotas.validate.bulkhead.dev")].rules{field}}}"#),
    ])
}

fn jsonpath(cluster: &Cluster, what: &[&str], path: &str) -> String {
    let template = format!("jsonpath={path}");
    let args = [&["get"], what, &["-o", template.as_str()]].concat();
    cluster.kubectl().ok(&args)
}

fn service(ns: &str, name: &str, kind: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  type: {kind}\n  ports: [{{port: 80}}]\n"
    )
}

#[tokio::test]
async fn a_custom_quota_counts_load_balancers_and_refuses_the_one_over_its_limit() {
    let cluster = Cluster::start().await;
    let ns = cluster.unique("e2e-cq");
    cluster.clean_up(&["namespace", &ns]);
    cluster.kubectl().ok(&["create", "namespace", &ns]);
    // Capsule's own example (107-customquota-namespace-loadbalancers.yaml), apiVersion changed.
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: CustomQuota\nmetadata: {{name: namespace-loadbalancers, namespace: {ns}}}\nspec:\n  limit: 2\n  sources:\n  - apiVersion: v1\n    kind: Service\n    op: count\n    selectors:\n    - fieldSelectors:\n      - .spec.type==\"LoadBalancer\"\n"
    ));
    let bulkhead = start(&cluster, "e2e-cq", &[]).await;
    let quota = ["customquota", "namespace-loadbalancers", "-n", ns.as_str()];
    quota_ready(&cluster, &bulkhead, &quota).await;
    cluster.apply(&service(&ns, "lb-a", "LoadBalancer"));
    cluster.apply(&service(&ns, "lb-b", "LoadBalancer"));
    cluster.apply(&service(&ns, "internal", "ClusterIP"));
    let out = cluster
        .kubectl()
        .run_with_input(&["apply", "-f", "-"], Some(&service(&ns, "lb-c", "LoadBalancer")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a third load balancer was admitted");
    assert!(
        err.contains(&format!(
            "creating Service {ns}/lb-c exceeds the limit of CustomQuota {ns}/namespace-loadbalancers: requested 1"
        )) && err.contains("limit 2 (available 0)"),
        "{err}"
    );
    // An update that makes a counted object of an uncounted one is refused as well.
    let out = cluster.kubectl().run(&[
        "patch",
        "service",
        "internal",
        "-n",
        &ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    assert!(
        !out.status.success(),
        "the update to a third load balancer was admitted"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("updating Service"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        jsonpath(&cluster, &["service", "internal", "-n", &ns], "{.spec.type}"),
        "ClusterIP"
    );
    // The status says what is used and which objects count.
    eventually(Duration::from_secs(30), || async {
        let used = jsonpath(&cluster, &quota, "{.status.usage.used}/{.status.usage.available}");
        let claims = jsonpath(&cluster, &quota, "{.status.claims[*].name}");
        (used == "2/0" && claims == "lb-a lb-b")
            .then_some(())
            .ok_or(format!("used {used}, claims {claims}"))
    })
    .await;
    // A quota whose path cannot be read is refused, saying why.
    let out = cluster.kubectl().run_with_input(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: CustomQuota\nmetadata: {{name: broken, namespace: {ns}}}\nspec:\n  limit: 1\n  sources:\n  - {{apiVersion: v1, kind: Service, op: add, path: 'spec.ports[*'}}\n"
        )),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a quota with a broken path was admitted");
    assert!(
        err.contains(&format!(
            "CustomQuota {ns}/broken: sources[0]: path `spec.ports[*` must start with a dot"
        )),
        "{err}"
    );
    // Rules taken out of the hook (a configuration replaced by hand, or re-created without them) are
    // put back.
    if let Some(name) = &bulkhead.webhook_configuration {
        let mut config: serde_json::Value = serde_json::from_str(&cluster.kubectl().ok(&[
            "get",
            "validatingwebhookconfiguration",
            name,
            "-o",
            "json",
        ]))
        .unwrap();
        for hook in config["webhooks"].as_array_mut().unwrap() {
            if hook["name"] == "customquotas.validate.bulkhead.dev" {
                hook.as_object_mut().unwrap().remove("rules");
            }
        }
        let out = cluster
            .kubectl()
            .run_with_input(&["replace", "-f", "-"], Some(&config.to_string()));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rules = hook_rules(&cluster, name, "");
        assert!(rules.is_empty(), "the rules are still there: {rules}");
        eventually(Duration::from_secs(120), || async {
            let rules = hook_rules(&cluster, name, "[*].resources");
            rules.contains("services").then_some(()).ok_or(rules)
        })
        .await;
    }
    // A load balancer gone gives its room back.
    cluster.kubectl().ok(&["delete", "service", "lb-a", "-n", &ns]);
    eventually(Duration::from_secs(30), || async {
        let out = cluster
            .kubectl()
            .run_with_input(&["apply", "-f", "-"], Some(&service(&ns, "lb-c", "LoadBalancer")));
        out.status
            .success()
            .then_some(())
            .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
}

#[tokio::test]
async fn a_global_custom_quota_sums_storage_over_a_tenants_namespaces() {
    let cluster = Cluster::start().await;
    let (tenant, alice, dev, prod) = crate::rules::names(&cluster, "e2e-gcq");
    let quota_name = cluster.unique("e2e-gcq-storage");
    cluster.clean_up(&["globalcustomquota", &quota_name]);
    cluster.apply(&crate::rules::two_namespace_tenant(
        (&tenant, &alice, &dev, &prod),
        "stage",
        " []\n",
    ));
    // Capsule's 092-globalcustomquota-solar-storage.yaml, selecting the tenant's namespaces by
    // Bulkhead's tenant label.
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: GlobalCustomQuota\nmetadata: {{name: {quota_name}}}\nspec:\n  namespaceSelectors:\n  - matchLabels: {{bulkhead.dev/tenant: {tenant}}}\n  sources:\n  - apiVersion: v1\n    kind: PersistentVolumeClaim\n    op: add\n    path: .spec.resources.requests.storage\n  limit: 5Gi\n"
    ));
    let bulkhead = start(&cluster, "e2e-gcq", &[]).await;
    let quota = ["globalcustomquota", quota_name.as_str()];
    eventually(Duration::from_secs(60), || async {
        let namespaces = jsonpath(&cluster, &quota, "{.status.namespaces[*]}");
        (namespaces == format!("{dev} {prod}"))
            .then_some(())
            .ok_or(namespaces)
    })
    .await;
    quota_ready(&cluster, &bulkhead, &quota).await;
    let pvc = |ns: &str, name: &str, size: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n"
        )
    };
    let alice_kubectl = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    let admitted = |ns: &str, name: &str, size: &str| {
        let out = alice_kubectl.run_with_input(&["apply", "-f", "-"], Some(&pvc(ns, name, size)));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Alice's RoleBindings in the new namespaces may still be on their way.
    for ns in [&dev, &prod] {
        eventually(Duration::from_secs(90), || async {
            let out = alice_kubectl.run(&["get", "persistentvolumeclaims", "-n", ns]);
            out.status
                .success()
                .then_some(())
                .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .await;
    }
    eventually(Duration::from_secs(30), || async {
        let (ok, err) = admitted(&dev, "data", "3Gi");
        ok.then_some(()).ok_or(err)
    })
    .await;
    // The other namespace shares the same 5Gi.
    let (ok, err) = admitted(&prod, "data", "3Gi");
    assert!(!ok, "3Gi more was admitted over a 5Gi quota");
    assert!(
        err.contains(&format!(
            "exceeds the limit of GlobalCustomQuota {quota_name}: requested 3Gi"
        )),
        "{err}"
    );
    let (ok, err) = admitted(&prod, "small", "2Gi");
    assert!(ok, "{err}");
    eventually(Duration::from_secs(30), || async {
        let used = jsonpath(&cluster, &quota, "{.status.usage.used}");
        let claims = jsonpath(&cluster, &quota, "{.status.claims[*].namespace}");
        (used == "5Gi" && claims == format!("{dev} {prod}"))
            .then_some(())
            .ok_or(format!("used {used}, claims in {claims}"))
    })
    .await;
    // A namespace outside the selection is not limited by it.
    let other = cluster.unique("e2e-gcq-other");
    cluster.clean_up(&["namespace", &other]);
    cluster.kubectl().ok(&["create", "namespace", &other]);
    cluster.apply(&pvc(&other, "big", "10Gi"));
}

#[tokio::test]
async fn scaling_a_deployment_past_a_replica_quota_is_refused() {
    let cluster = Cluster::start().await;
    if cluster.is_testkit() {
        // The testkit serves no `scale` subresource (docs/testing.md): real control plane only.
        eprintln!("scaling_a_deployment_past_a_replica_quota_is_refused: real control plane only");
        return;
    }
    let ns = cluster.unique("e2e-cq-scale");
    cluster.clean_up(&["namespace", &ns]);
    cluster.kubectl().ok(&["create", "namespace", &ns]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: CustomQuota\nmetadata: {{name: replicas, namespace: {ns}}}\nspec:\n  limit: 3\n  sources:\n  - {{apiVersion: apps/v1, kind: Deployment, op: add, path: .spec.replicas}}\n"
    ));
    let bulkhead = start(&cluster, "e2e-cq-scale", &[]).await;
    let quota = ["customquota", "replicas", "-n", ns.as_str()];
    quota_ready(&cluster, &bulkhead, &quota).await;
    cluster.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: web, image: nginx}}]}}\n"
    ));
    // The scale subresource changes .spec.replicas without the Deployment in the request.
    let out = cluster
        .kubectl()
        .run(&["scale", "deployment", "web", "-n", &ns, "--replicas=5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "scaled past the quota");
    assert!(
        err.contains(&format!(
            "updating Deployment {ns}/web exceeds the limit of CustomQuota {ns}/replicas: requested 3"
        )),
        "{err}"
    );
    assert_eq!(
        jsonpath(&cluster, &["deployment", "web", "-n", &ns], "{.spec.replicas}"),
        "2"
    );
    cluster
        .kubectl()
        .ok(&["scale", "deployment", "web", "-n", &ns, "--replicas=3"]);
    cluster
        .kubectl()
        .ok(&["scale", "deployment", "web", "-n", &ns, "--replicas=1"]);
    eventually(Duration::from_secs(30), || async {
        let used = jsonpath(&cluster, &quota, "{.status.usage.used}");
        (used == "1").then_some(()).ok_or(used)
    })
    .await;
}

/// Creates `n` ConfigMaps in `ns` at once (each from its own task), and returns how many were admitted.
async fn burst(cluster: &Cluster, ns: &str, prefix: &str, n: usize) -> usize {
    let client = cluster.client_as("admin", &["system:masters"]).await;
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let creates = (0..n).map(|i| {
        let api = api.clone();
        let name = format!("{prefix}-{i}");
        async move {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": {"counted": "yes"}},
                "data": {"k": "v"},
            }))
            .unwrap();
            api.create(&PostParams::default(), &cm).await.is_ok()
        }
    });
    join_all(creates).await.into_iter().filter(|ok| *ok).count()
}

fn counted(cluster: &Cluster, ns: &str) -> usize {
    cluster
        .kubectl()
        .ok(&["get", "configmaps", "-n", ns, "-l", "counted=yes", "-o", "name"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[tokio::test]
async fn concurrent_creates_never_pass_the_limit_and_reservations_survive_a_webhook_restart() {
    let cluster = Cluster::start().await;
    let ns = cluster.unique("e2e-cq-burst");
    cluster.clean_up(&["namespace", &ns]);
    cluster.kubectl().ok(&["create", "namespace", &ns]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: CustomQuota\nmetadata: {{name: configmaps, namespace: {ns}}}\nspec:\n  limit: 10\n  scopeSelectors: [{{matchLabels: {{counted: \"yes\"}}}}]\n  sources:\n  - {{apiVersion: v1, kind: ConfigMap, op: count}}\n"
    ));
    let mut bulkhead = start(&cluster, "e2e-cq-burst", &[]).await;
    let quota = ["customquota", "configmaps", "-n", ns.as_str()];
    quota_ready(&cluster, &bulkhead, &quota).await;
    // 40 creates at once against room for 10: exactly 10 get in (overshoot 0).
    let admitted = burst(&cluster, &ns, "first", 40).await;
    let exist = counted(&cluster, &ns);
    println!("overshoot: 40 concurrent creates, limit 10: {admitted} admitted, {exist} exist");
    assert_eq!(
        (admitted, exist),
        (10, 10),
        "the quota was overshot (or undershot)"
    );
    // Counted, nothing in flight: the reservations left are those of counted objects (kept until
    // they expire, counted once).
    eventually(Duration::from_secs(30), || async {
        let used = jsonpath(&cluster, &quota, "{.status.usage.used}");
        let mut reserved: Vec<String> = jsonpath(&cluster, &quota, "{.status.reservations[*].uid}")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let claimed = jsonpath(&cluster, &quota, "{.status.claims[*].uid}");
        reserved.retain(|uid| !claimed.contains(uid.as_str()));
        (used == "10" && reserved.is_empty())
            .then_some(())
            .ok_or(format!("used {used}, in flight {reserved:?}"))
    })
    .await;
    // Room made by deleting 4 is taken by exactly 4 of another burst.
    for i in 0..40 {
        let _ = cluster.kubectl().run(&[
            "delete",
            "configmap",
            &format!("first-{i}"),
            "-n",
            &ns,
            "--ignore-not-found",
            "--wait=false",
        ]);
        if counted(&cluster, &ns) <= 6 {
            break;
        }
    }
    eventually(Duration::from_secs(30), || async {
        let used = jsonpath(&cluster, &quota, "{.status.usage.used}");
        (used == "6").then_some(()).ok_or(used)
    })
    .await;
    let admitted = burst(&cluster, &ns, "second", 20).await;
    assert_eq!((admitted, counted(&cluster, &ns)), (4, 10));
    // Free 5 again, fill them with a burst, and kill Bulkhead (SIGKILL) at once: whatever it had not
    // counted yet is held by the reservations in the quota's status, which the restarted process reads.
    for i in 0..20 {
        let _ = cluster.kubectl().run(&[
            "delete",
            "configmap",
            &format!("second-{i}"),
            "-n",
            &ns,
            "--ignore-not-found",
        ]);
    }
    for i in 0..40 {
        if counted(&cluster, &ns) <= 5 {
            break;
        }
        let _ = cluster.kubectl().run(&[
            "delete",
            "configmap",
            &format!("first-{i}"),
            "-n",
            &ns,
            "--ignore-not-found",
        ]);
    }
    eventually(Duration::from_secs(30), || async {
        let used = jsonpath(&cluster, &quota, "{.status.usage.used}");
        (used == "5").then_some(()).ok_or(used)
    })
    .await;
    let admitted = burst(&cluster, &ns, "third", 20).await;
    bulkhead.kill_and_restart();
    bulkhead.wait_ready().await;
    let again = burst(&cluster, &ns, "fourth", 20).await;
    println!(
        "across a restart: {admitted} then {again} admitted, {} exist",
        counted(&cluster, &ns)
    );
    assert_eq!((admitted, again, counted(&cluster, &ns)), (5, 0, 10));
}

/// `cargo xtask bench-custom-quota [--controlplane]`: rounds of BULKHEAD_BENCH_CQ (100) concurrent
/// ConfigMap creates against a CustomQuota with room for BULKHEAD_BENCH_CQ_LIMIT (25), through one
/// Bulkhead and then through two (each with its own webhook configuration, so the API server asks
/// both and they race on the same quota). Reports the overshoot (must be 0) and the time of a burst
/// beside the same burst into a namespace no quota counts (the API server's own figure).
#[tokio::test]
#[ignore = "a benchmark: cargo xtask bench-custom-quota"]
async fn custom_quota_overshoot_under_concurrent_creates() {
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (n, limit) = (env("BULKHEAD_BENCH_CQ", 100), env("BULKHEAD_BENCH_CQ_LIMIT", 25));
    let cluster = Cluster::start().await;
    let first = start(&cluster, "bench-cq", &[]).await;
    for webhooks in [1, 2] {
        let second = if webhooks == 2 {
            Some(start(&cluster, "bench-cq-second", &[]).await)
        } else {
            None
        };
        for round in 0..3 {
            let ns = cluster.unique("bench-cq");
            let free = cluster.unique("bench-cq-free");
            for n in [&ns, &free] {
                cluster.kubectl().ok(&["create", "namespace", n]);
            }
            cluster.apply(&format!(
                "apiVersion: bulkhead.dev/v1alpha1\nkind: CustomQuota\nmetadata: {{name: configmaps, namespace: {ns}}}\nspec:\n  limit: {limit}\n  scopeSelectors: [{{matchLabels: {{counted: \"yes\"}}}}]\n  sources:\n  - {{apiVersion: v1, kind: ConfigMap, op: count}}\n"
            ));
            let quota = ["customquota", "configmaps", "-n", ns.as_str()];
            quota_ready(&cluster, &first, &quota).await;
            if let Some(second) = &second {
                quota_ready(&cluster, second, &quota).await;
            }
            let started = std::time::Instant::now();
            let unlimited = burst(&cluster, &free, "c", n).await;
            let api_server = started.elapsed();
            let started = std::time::Instant::now();
            let admitted = burst(&cluster, &ns, "c", n).await;
            let ours = started.elapsed();
            let exist = counted(&cluster, &ns);
            println!(
                "webhooks {webhooks} round {round}: {n} concurrent creates, limit {limit}: {admitted} admitted, {exist} exist, overshoot {}; burst {:.0} ms (API server alone, {unlimited} creates: {:.0} ms, ratio {:.2})",
                exist.saturating_sub(limit),
                ours.as_secs_f64() * 1e3,
                api_server.as_secs_f64() * 1e3,
                ours.as_secs_f64() / api_server.as_secs_f64()
            );
            assert_eq!((admitted, exist), (limit, limit));
            for n in [&ns, &free] {
                cluster.kubectl().run(&["delete", "namespace", n, "--wait=false"]);
            }
        }
    }
}
