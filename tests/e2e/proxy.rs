//! The proxy role end to end: tenant users run plain kubectl (and kube-rs) against Bulkhead's proxy
//! with their own bearer tokens, and see exactly their slice of the cluster.
//!
//! Tenant owners here are ServiceAccounts, because a TokenRequest (`kubectl create token`) gives a
//! real bearer token on any cluster.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;

use crate::harness::{Bulkhead, Cluster, Kubectl, client_for, eventually};

struct World {
    a: String,
    b: String,
    accounts: String,
    a_namespaces: Vec<String>,
    b_namespaces: Vec<String>,
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

/// Two tenants, each owned by a ServiceAccount, with two and one namespaces.
async fn world(cluster: &Cluster) -> World {
    let a = cluster.unique("e2e-px-a");
    let b = cluster.unique("e2e-px-b");
    let accounts = cluster.unique("e2e-px-accounts");
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {accounts}}}\n"
    ));
    for sa in ["alice", "bob", "carol", "dave"] {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: {accounts}}}\n"
        ));
    }
    cluster.apply(&format!(
        r#"apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {a}}}
spec:
  owners:
  - kind: ServiceAccount
    name: system:serviceaccount:{accounts}:alice
    proxySettings:
    - {{kind: Nodes, operations: [List]}}
    - {{kind: StorageClasses, operations: [List, Update]}}
  - kind: ServiceAccount
    name: system:serviceaccount:{accounts}:carol
  nodeSelector: {{e2e-pool: {a}}}
  storageClasses: {{allowed: [{a}-class]}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: Tenant
metadata: {{name: {b}}}
spec:
  owners:
  - kind: ServiceAccount
    name: system:serviceaccount:{accounts}:bob
    proxySettings:
    - {{kind: Nodes, operations: [List, Update]}}
  nodeSelector: {{e2e-pool: {b}}}
"#
    ));
    let a_namespaces = vec![format!("{a}-one"), format!("{a}-two")];
    let b_namespaces = vec![format!("{b}-one")];
    for (tenant, namespaces) in [(&a, &a_namespaces), (&b, &b_namespaces)] {
        for ns in namespaces {
            cluster.apply(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{bulkhead.dev/tenant: {tenant}}}}}\n"
            ));
        }
    }
    World {
        a,
        b,
        accounts,
        a_namespaces,
        b_namespaces,
    }
}

async fn start(cluster: &Cluster, extra: &[&str]) -> Bulkhead {
    start_with(cluster, extra, &[]).await
}

/// As [`start`], with more chart values.
async fn start_with(cluster: &Cluster, extra: &[&str], chart: &[&str]) -> Bulkhead {
    let lease = cluster.unique("e2e-px-lease");
    let mut args = vec!["--lease-namespace", "default", "--lease-name", &lease];
    args.extend_from_slice(extra);
    // The chart lets the proxy make the cluster-scoped writes proxySettings grant only when asked to.
    let mut values = vec!["proxy.clusterScopedWrites=true"];
    values.extend_from_slice(chart);
    let bulkhead = Bulkhead::start_with_chart(cluster, &args, &values);
    bulkhead.wait_ready().await;
    bulkhead
}

/// kubectl through the proxy as a ServiceAccount of `world`.
fn through_proxy(
    cluster: &Cluster,
    bulkhead: &Bulkhead,
    world: &World,
    account: &str,
    tenant: &str,
) -> (Kubectl, PathBuf) {
    let token = cluster.service_account_token(&world.accounts, account);
    let kubeconfig = bulkhead.proxy_kubeconfig(cluster.dir(), tenant, &token);
    (Kubectl::at(kubeconfig.clone()), kubeconfig)
}

/// A `kubectl ... --watch` running in the background, its output lines collected.
struct Watching {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Watching {
    fn start(kubeconfig: &std::path::Path, args: &[&str]) -> Watching {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Watching {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to 30 s) for a line that `wanted` accepts.
    fn until(&mut self, wanted: impl Fn(&str) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.seen.iter().any(|l| wanted(l)) {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the watch never showed {what}: {:?}", self.seen),
            }
        }
    }

    /// Stops kubectl; every line it printed.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen
    }
}

/// Creates a pod as the administrator, retrying while a new namespace's default ServiceAccount is
/// still missing (real clusters create it a moment after the namespace).
async fn create_pod(cluster: &Cluster, namespace: &str, name: &str) {
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  containers: [{{name: main, image: registry.k8s.io/pause:3.9}}]\n"
    );
    eventually(Duration::from_secs(30), || async {
        let out = cluster
            .kubectl()
            .run_with_input(&["apply", "-f", "-"], Some(&pod));
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
}

/// Waits until `k` lists exactly `expected` with these arguments (`-o name` output, prefix removed).
async fn sees_exactly(k: &Kubectl, args: &[&str], expected: &BTreeSet<String>) {
    eventually(Duration::from_secs(30), || async {
        let out = k.run(args);
        let seen: BTreeSet<String> = lines(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|l| l.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        if out.status.success() && &seen == expected {
            Ok(())
        } else {
            Err(format!(
                "{args:?}: saw {seen:?}, want {expected:?}; {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await;
}

/// The administrator's kubeconfig pointed at the proxy (its token or client certificate unchanged).
fn admin_through_proxy(cluster: &Cluster, bulkhead: &Bulkhead) -> Kubectl {
    let path = cluster
        .dir()
        .join(format!("admin-proxy-{}.kubeconfig", bulkhead.proxy.port()));
    std::fs::copy(cluster.kubeconfig(), &path).unwrap();
    let k = Kubectl::at(path);
    let name = k.ok(&["config", "view", "--minify", "-o", "jsonpath={.clusters[0].name}"]);
    k.ok(&[
        "config",
        "unset",
        &format!("clusters.{name}.certificate-authority-data"),
    ]);
    k.ok(&[
        "config",
        "unset",
        &format!("clusters.{name}.certificate-authority"),
    ]);
    k.ok(&[
        "config",
        "set-cluster",
        &name,
        &format!("--server=https://{}", bulkhead.proxy),
        "--insecure-skip-tls-verify=true",
    ]);
    k
}

#[tokio::test]
async fn tenant_users_see_their_slice_through_the_proxy() {
    let cluster = Cluster::start().await;
    let bulkhead = start(&cluster, &[]).await;
    let w = world(&cluster).await;
    let (alice, _) = through_proxy(&cluster, &bulkhead, &w, "alice", &w.a);
    let (bob, _) = through_proxy(&cluster, &bulkhead, &w, "bob", &w.b);

    // Namespaces: exactly their own, as a plain list (from the cache) and as kubectl's table.
    sees_exactly(
        &alice,
        &["get", "namespaces", "-o", "name"],
        &set(&w.a_namespaces),
    )
    .await;
    sees_exactly(&bob, &["get", "namespaces", "-o", "name"], &set(&w.b_namespaces)).await;
    let table = alice.ok(&["get", "namespaces"]);
    let rows: BTreeSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(rows, set(&w.a_namespaces), "table output:\n{table}");
    // Printed as the API server prints it (the proxy answers this one from its cache).
    let direct = cluster
        .kubectl()
        .ok(&["get", "namespaces", "-l", &format!("bulkhead.dev/tenant={}", w.a)]);
    let columns = |t: &str| -> Vec<Vec<String>> {
        t.lines()
            .map(|l| l.split_whitespace().take(2).map(str::to_owned).collect())
            .collect()
    };
    assert_eq!(
        columns(&table),
        columns(&direct),
        "proxy:\n{table}\nAPI server:\n{direct}"
    );
    assert_eq!(table.lines().next(), direct.lines().next(), "the same header");
    let wide = alice.ok(&["get", "namespaces", "-o", "wide", "--show-labels"]);
    assert!(wide.contains(&format!("bulkhead.dev/tenant={}", w.a)), "{wide}");

    // Another tenant's namespace does not exist for them.
    let err = alice.fails(&["get", "namespace", &w.b_namespaces[0]]);
    assert!(
        err.contains(&format!("namespaces \"{}\" not found", w.b_namespaces[0])),
        "{err}"
    );
    alice.ok(&["get", "namespace", &w.a_namespaces[0]]);

    // A watch started now shows a namespace created later in the tenant, and nothing of others.
    let (_, alice_config) = through_proxy(&cluster, &bulkhead, &w, "alice", &w.a);
    let mut watch = Watching::start(&alice_config, &["get", "namespaces", "--watch", "-o", "name"]);
    watch.until(|l| l.contains(&w.a), "the first list");
    let later = format!("{}-later", w.a);
    let theirs = format!("{}-later", w.b);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {theirs}, labels: {{bulkhead.dev/tenant: {}}}}}\n",
        w.b
    ));
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {later}, labels: {{bulkhead.dev/tenant: {}}}}}\n",
        w.a
    ));
    watch.until(|l| l.ends_with(&format!("/{later}")), &later);
    let seen = watch.stop();
    assert!(
        seen.iter().all(|l| !l.contains(&w.b)),
        "another tenant's namespace reached the watch: {seen:?}"
    );

    // Nodes by the tenant's nodeSelector, storage classes by its allowed list.
    for (node, pool) in [(format!("{}-node", w.a), &w.a), (format!("{}-node", w.b), &w.b)] {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{e2e-pool: {pool}}}}}\n"
        ));
    }
    for class in [format!("{}-class", w.a), format!("{}-other", w.a)] {
        cluster.apply(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {class}}}\nprovisioner: example.com/none\n"
        ));
    }
    sees_exactly(
        &alice,
        &["get", "nodes", "-o", "name"],
        &set(&[format!("{}-node", w.a)]),
    )
    .await;
    sees_exactly(
        &bob,
        &["get", "nodes", "-o", "name"],
        &set(&[format!("{}-node", w.b)]),
    )
    .await;
    let nodes = alice.ok(&["get", "nodes"]);
    assert!(
        nodes.contains(&format!("{}-node", w.a)) && !nodes.contains(&w.b),
        "{nodes}"
    );
    sees_exactly(
        &alice,
        &["get", "storageclasses", "-o", "name"],
        &set(&[format!("{}-class", w.a)]),
    )
    .await;
    let err = alice.fails(&["get", "node", &format!("{}-node", w.b)]);
    assert!(err.contains("not found"), "{err}");
    // Seeing is not changing: alice's proxySettings grant List only.
    let err = alice.fails(&["label", "node", &format!("{}-node", w.a), "touched=yes"]);
    assert!(err.contains("grants Update"), "{err}");
    let err = alice.fails(&["delete", "node", &format!("{}-node", w.a)]);
    assert!(err.contains("grants Delete"), "{err}");
    let err = alice.fails(&["delete", "node", &format!("{}-node", w.b)]);
    assert!(err.contains("not found"), "{err}");
    let labels = cluster.kubectl().ok(&[
        "get",
        "node",
        &format!("{}-node", w.a),
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!labels.contains("touched"), "{labels}");
    // Bob may update his tenant's node. The proxy writes as Bulkhead, so it judges the object the
    // write would make as the webhook judges the user's own writes: a change that would take the node
    // out of his tenant's selector (and give it to another tenant) is refused, and a server-side dry
    // run writes nothing.
    let b_node = format!("{}-node", w.b);
    bob.ok(&["label", "node", &b_node, "touched=yes"]);
    let err = bob.fails(&[
        "label",
        "node",
        &b_node,
        &format!("e2e-pool={}", w.a),
        "--overwrite",
    ]);
    assert!(
        err.contains("the change would take it out of what your tenants may use"),
        "{err}"
    );
    bob.ok(&["label", "node", &b_node, "dry=run", "--dry-run=server"]);
    let labels = cluster
        .kubectl()
        .ok(&["get", "node", &b_node, "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        labels.contains("touched")
            && labels.contains(&format!("\"e2e-pool\":\"{}\"", w.b))
            && !labels.contains("dry"),
        "{labels}"
    );
    // ...unless they grant more: Update on storage classes, for the tenant's own class only.
    alice.ok(&["label", "storageclass", &format!("{}-class", w.a), "touched=yes"]);
    let sc = format!("{}-class", w.a);
    let labels = cluster
        .kubectl()
        .ok(&["get", "storageclass", &sc, "-o", "jsonpath={.metadata.labels}"]);
    assert!(labels.contains("touched"), "{labels}");
    let err = alice.fails(&["label", "storageclass", &format!("{}-other", w.a), "touched=yes"]);
    assert!(err.contains("not found"), "{err}");

    // Pods across namespaces: only theirs.
    for ns in w.a_namespaces.iter().chain(&w.b_namespaces) {
        create_pod(&cluster, ns, &format!("pod-{ns}")).await;
    }
    let mine: BTreeSet<String> = w.a_namespaces.iter().map(|ns| format!("pod-{ns}")).collect();
    sees_exactly(&alice, &["get", "pods", "-A", "-o", "name"], &mine).await;
    let wide = alice.ok(&["get", "pods", "--all-namespaces"]);
    assert!(wide.starts_with("NAMESPACE"), "{wide}");
    assert!(!wide.contains(&w.b), "{wide}");
    // A cross-namespace watch shows pods of a namespace the tenant gains after it started.
    let mut pods = Watching::start(&alice_config, &["get", "pods", "-A", "--watch", "-o", "name"]);
    pods.until(
        |l| l.ends_with(&format!("pod-{}", w.a_namespaces[0])),
        "the first list",
    );
    let third = format!("{}-third", w.a);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {third}, labels: {{bulkhead.dev/tenant: {}}}}}\n",
        w.a
    ));
    for ns in [&third, &w.b_namespaces[0]] {
        create_pod(&cluster, ns, &format!("late-{ns}")).await;
    }
    pods.until(
        |l| l.ends_with(&format!("late-{third}")),
        "the pod in the new namespace",
    );
    let seen = pods.stop();
    assert!(seen.iter().all(|l| !l.contains(&w.b)), "{seen:?}");

    // Reads inside another tenant's namespace are the API server's to refuse, and it does.
    let theirs = &w.b_namespaces[0];
    let err = alice.fails(&["get", "pod", &format!("pod-{theirs}"), "-n", theirs]);
    assert!(err.contains("forbidden"), "{err}");
    let err = alice.fails(&["get", "pods", "-n", theirs, "--watch", "--request-timeout=5s"]);
    assert!(err.contains("forbidden"), "{err}");

    // Writes go through as the caller: allowed in their namespace, forbidden in another tenant's.
    eventually(Duration::from_secs(30), || async {
        let out = alice.run(&[
            "create",
            "deployment",
            "web",
            "--image=registry.k8s.io/pause:3.9",
            "-n",
            &w.a_namespaces[0],
        ]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
    let deployment =
        cluster
            .kubectl()
            .ok(&["get", "deployment", "web", "-n", &w.a_namespaces[0], "-o", "name"]);
    assert_eq!(deployment.trim(), "deployment.apps/web");
    let err = alice.fails(&[
        "create",
        "deployment",
        "web",
        "--image=registry.k8s.io/pause:3.9",
        "-n",
        &w.b_namespaces[0],
    ]);
    assert!(err.contains("forbidden"), "{err}");

    // Tools that ask first are told they may list namespaces.
    assert_eq!(alice.ok(&["auth", "can-i", "list", "namespaces"]).trim(), "yes");
    // Tenants: their own only.
    sees_exactly(
        &alice,
        &["get", "tenants", "-o", "name"],
        &set(std::slice::from_ref(&w.a)),
    )
    .await;
}

/// The cluster's CA in a file, for `--proxy-client-ca`: so the administrator's client certificate
/// (the real control plane's, kind's, kubeadm's) is accepted by the proxy too.
fn cluster_ca(cluster: &Cluster) -> PathBuf {
    let admin_config = cluster.flat_kubeconfig();
    let ca = cluster.dir().join("cluster-ca.crt");
    let ca_data = admin_config["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .expect("the administrator's kubeconfig embeds the cluster CA");
    std::fs::write(
        &ca,
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, ca_data).unwrap(),
    )
    .unwrap();
    ca
}

#[tokio::test]
async fn the_proxy_authenticates_strictly_and_reviews_a_token_once_per_ttl() {
    let cluster = Cluster::start().await;
    let ttl = Duration::from_secs(2);
    let ca = cluster_ca(&cluster);
    let bulkhead = start(
        &cluster,
        &[
            "--proxy-token-ttl",
            "2s",
            "--proxy-client-ca",
            ca.to_str().unwrap(),
        ],
    )
    .await;
    let w = world(&cluster).await;
    let (alice, alice_config) = through_proxy(&cluster, &bulkhead, &w, "alice", &w.a);
    sees_exactly(
        &alice,
        &["get", "namespaces", "-o", "name"],
        &set(&w.a_namespaces),
    )
    .await;

    // A forged impersonation is refused: alice may not impersonate an administrator.
    let err = alice.fails(&[
        "get",
        "namespaces",
        "--as",
        "admin",
        "--as-group",
        "system:masters",
    ]);
    assert!(err.contains("cannot impersonate"), "{err}");
    // An administrator may impersonate: through the proxy it then sees what the impersonated owner sees.
    let admin = admin_through_proxy(&cluster, &bulkhead);
    let as_alice = format!("system:serviceaccount:{}:alice", w.accounts);
    sees_exactly(
        &admin,
        &["get", "namespaces", "-o", "name", "--as", &as_alice],
        &set(&w.a_namespaces),
    )
    .await;
    // Callers who own no tenant (here the administrator) pass through untouched.
    let all = admin.ok(&["get", "namespaces", "-o", "name"]);
    assert!(
        all.contains("namespace/default") && all.contains(&w.b_namespaces[0]),
        "{all}"
    );
    // A ProxySetting in a tenant namespace lends its view, no wider than the owners'.
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: ProxySetting\nmetadata: {{name: share, namespace: {}}}\nspec:\n  subjects:\n  - kind: ServiceAccount\n    name: system:serviceaccount:{}:dave\n    proxySettings: [{{kind: Nodes, operations: [List, Delete]}}]\n",
        w.a_namespaces[0], w.accounts
    ));
    let (dave, _) = through_proxy(&cluster, &bulkhead, &w, "dave", &w.a);
    sees_exactly(&dave, &["get", "namespaces", "-o", "name"], &set(&w.a_namespaces)).await;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {}-shared-node, labels: {{e2e-pool: {}}}}}\n",
        w.a, w.a
    ));
    sees_exactly(
        &dave,
        &["get", "nodes", "-o", "name"],
        &set(&[format!("{}-shared-node", w.a)]),
    )
    .await;
    let err = dave.fails(&["delete", "node", &format!("{}-shared-node", w.a)]);
    assert!(err.contains("grants Delete"), "{err}");
    // No credentials, or credentials nobody issued: 401.
    let nobody = bulkhead.proxy_kubeconfig(cluster.dir(), &w.a, "not-a-token");
    let err = Kubectl::at(nobody).fails(&["get", "namespaces"]);
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );

    // 1,000 requests with one token: at most one TokenReview per TTL window (the first after the
    // cached review expired).
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let misses_before = bulkhead
        .metric("bulkhead_proxy_token_cache_total{result=\"miss\"}")
        .unwrap_or_default();
    let client = client_for(&alice_config, None, &[]).await;
    let api: Api<Namespace> = Api::all(client);
    let started = Instant::now();
    let results: Vec<_> = futures::future::join_all((0..1000).map(|_| {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.map(|l| l.items.len()) }
    }))
    .await;
    let elapsed = started.elapsed();
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().ok() == Some(&w.a_namespaces.len()))
    );
    let misses = bulkhead
        .metric("bulkhead_proxy_token_cache_total{result=\"miss\"}")
        .unwrap_or_default()
        - misses_before;
    let windows = (elapsed.as_secs_f64() / ttl.as_secs_f64()).ceil() + 1.0;
    assert!(
        misses >= 1.0 && misses <= windows,
        "{misses} TokenReviews for 1,000 requests over {elapsed:?} (TTL {ttl:?})"
    );

    // A revoked token (its ServiceAccount deleted) stops working once its cached review expires.
    let (carol, _) = through_proxy(&cluster, &bulkhead, &w, "carol", &w.a);
    sees_exactly(
        &carol,
        &["get", "namespaces", "-o", "name"],
        &set(&w.a_namespaces),
    )
    .await;
    cluster
        .kubectl()
        .ok(&["delete", "serviceaccount", "carol", "-n", &w.accounts]);
    eventually(Duration::from_secs(30), || async {
        let out = carol.run(&["get", "namespaces"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && (err.contains("Unauthorized") || err.contains("must be logged in")))
            .then_some(())
            .ok_or(err)
    })
    .await;
    let _ = &w.b;
}

#[tokio::test]
async fn a_write_the_proxy_makes_as_bulkhead_passes_the_webhooks_rule_for_the_user() {
    let cluster = Cluster::start().await;
    // The configuration is cluster-wide: on a cluster that already has one, leave it alone.
    if cluster.has_configuration() {
        return;
    }
    cluster.clean_up(&["bulkheadconfiguration", "default"]);
    cluster.apply(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: BulkheadConfiguration\nmetadata: {name: default}\nspec:\n  userGroups: [bulkhead.dev]\n  nodeMetadata: {forbiddenLabels: {denied: [e2e-reserved]}}\n",
    );
    let bulkhead = start(&cluster, &[]).await;
    let w = world(&cluster).await;
    let node = format!("{}-node", w.b);
    cluster.clean_up(&["node", &node]);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}, labels: {{e2e-pool: {}}}}}\n",
        w.b
    ));
    let (bob, _) = through_proxy(&cluster, &bulkhead, &w, "bob", &w.b);
    sees_exactly(
        &bob,
        &["get", "nodes", "-o", "name"],
        &set(std::slice::from_ref(&node)),
    )
    .await;
    // Bob has no RBAC on nodes: his own write would reach the webhook, which forbids the label. The
    // proxy writes as Bulkhead, which the webhook lets through, so the proxy applies the same rule.
    let err = bob.fails(&["label", "node", &node, "e2e-reserved=mine"]);
    assert!(
        err.contains(&format!(
            "label `e2e-reserved` of node `{node}` is forbidden to tenant users"
        )),
        "{err}"
    );
    let err = bob.fails(&[
        "patch",
        "node",
        &node,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/e2e-reserved","value":"mine"}]"#,
    ]);
    assert!(err.contains("is forbidden to tenant users"), "{err}");
    bob.ok(&["label", "node", &node, "e2e-free=yes"]);
    let labels = cluster
        .kubectl()
        .ok(&["get", "node", &node, "-o", "jsonpath={.metadata.labels}"]);
    assert!(
        labels.contains("e2e-free") && !labels.contains("e2e-reserved"),
        "{labels}"
    );
}

#[tokio::test]
async fn names_reach_the_api_server_exactly_as_the_proxy_read_them() {
    let cluster = Cluster::start().await;
    let ca = cluster_ca(&cluster);
    let bulkhead = start(&cluster, &["--proxy-client-ca", ca.to_str().unwrap()]).await;
    let admin = admin_through_proxy(&cluster, &bulkhead);
    // A user name outside ASCII (an OIDC name, say) is impersonated as itself: before, the header
    // could not be written, was left out, and the request went with Bulkhead's own identity.
    let err = admin.fails(&[
        "--as",
        "josé",
        "--as-group",
        "équipe",
        "get",
        "configmaps",
        "-n",
        "default",
    ]);
    assert!(
        err.contains("User \"josé\" cannot list resource \"configmaps\""),
        "{err}"
    );
    // A name HTTP would change on the way (a trailing space is trimmed) is refused, not forwarded as
    // another. Only the testkit mints tokens for such names.
    if let Some(testkit) = cluster.testkit() {
        testkit.add_token("e2e-padded-token", "alice ", &["bulkhead.dev"]);
        let path = bulkhead.proxy_kubeconfig(cluster.dir(), "padded", "e2e-padded-token");
        let err = Kubectl::at(path).fails(&["get", "namespaces"]);
        assert!(
            err.contains("user \"alice \" cannot pass through the proxy"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn the_role_binding_reflector_lists_the_namespaces_a_binding_names_the_caller_in() {
    let cluster = Cluster::start().await;
    let w = world(&cluster).await;
    let bulkhead = start_with(
        &cluster,
        &["--proxy-role-binding-reflector=true"],
        &["proxy.roleBindingReflector=true"],
    )
    .await;
    let unmanaged = cluster.unique("e2e-px-reflected");
    cluster.kubectl().ok(&["create", "namespace", &unmanaged]);
    cluster.clean_up(&["namespace", &unmanaged]);
    let bind = |ns: &str, name: &str, account: &str| {
        cluster.apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}\nsubjects: [{{kind: ServiceAccount, name: {account}, namespace: {}}}]\n",
            w.accounts
        ));
    };
    // Dave owns nothing; a RoleBinding names him in one of b's namespaces and in an unmanaged one.
    bind(&w.b_namespaces[0], "dave-reads", "dave");
    bind(&unmanaged, "dave-reads", "dave");
    let (dave, _) = through_proxy(&cluster, &bulkhead, &w, "dave", "dave");
    sees_exactly(
        &dave,
        &["get", "namespaces", "-o", "name"],
        &set(&[w.b_namespaces[0].clone(), unmanaged.clone()]),
    )
    .await;
    dave.ok(&["get", "namespace", &w.b_namespaces[0]]);
    let err = dave.fails(&["get", "namespace", &w.a_namespaces[0]]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    // Nothing else of his is narrowed: his own RBAC answers the rest.
    let err = dave.fails(&["get", "nodes"]);
    assert!(err.contains("forbidden"), "{err}");
    // An owner sees her tenant's namespaces and the reflected one.
    bind(&w.b_namespaces[0], "alice-reads", "alice");
    let (alice, _) = through_proxy(&cluster, &bulkhead, &w, "alice", &w.a);
    let mut expected = set(&w.a_namespaces);
    expected.insert(w.b_namespaces[0].clone());
    sees_exactly(&alice, &["get", "namespaces", "-o", "name"], &expected).await;
    // Lists across namespaces reach only the namespaces of RoleBindings labelled for reflection
    // (capsule-proxy's reflection of namespaced items); the API server's RBAC still decides there.
    for ns in [&w.b_namespaces[0], &unmanaged] {
        cluster.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: marker, namespace: {ns}}}\n"
        ));
    }
    let markers = |k: &Kubectl| {
        let out = k.run(&[
            "get",
            "configmaps",
            "-A",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}"#,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            text.lines()
                .filter(|l| l.ends_with("/marker"))
                .map(str::to_owned)
                .collect::<BTreeSet<String>>(),
            err,
        )
    };
    let (_, err) = markers(&dave);
    assert!(
        err.contains("forbidden"),
        "an unlabelled binding reflected a list: {err}"
    );
    cluster.kubectl().ok(&[
        "label",
        "rolebinding",
        "dave-reads",
        "-n",
        &unmanaged,
        "reflection.proxy.projectcapsule.dev/enabled=true",
    ]);
    eventually(Duration::from_secs(20), || async {
        let (seen, err) = markers(&dave);
        (seen == set(&[format!("{unmanaged}/marker")]))
            .then_some(())
            .ok_or(format!("{seen:?} {err}"))
    })
    .await;
    // The binding gone, so is the namespace.
    cluster
        .kubectl()
        .ok(&["delete", "rolebinding", "dave-reads", "-n", &unmanaged]);
    sees_exactly(
        &dave,
        &["get", "namespaces", "-o", "name"],
        &set(&[w.b_namespaces[0].clone()]),
    )
    .await;
}

#[tokio::test]
async fn global_proxy_settings_let_a_subject_list_the_selected_cluster_objects() {
    let cluster = Cluster::start().await;
    let w = world(&cluster).await;
    // The proxy reads GlobalCustomQuotas with its own rights for the subjects granted: the chart gives
    // it exactly what `proxy.globalResources` lists.
    let bulkhead = start_with(
        &cluster,
        &[],
        &[r#"proxy.globalResources=[{"apiGroups":["bulkhead.dev"],"resources":["globalcustomquotas"],"verbs":["get","list","watch"]}]"#],
    )
    .await;
    let team = cluster.unique("green");
    let (green, other, settings) = (
        cluster.unique("e2e-gpx-green"),
        cluster.unique("e2e-gpx-other"),
        cluster.unique("e2e-gpx"),
    );
    for (name, labels) in [(&green, format!("{{team: {team}}}")), (&other, "{}".to_owned())] {
        cluster.clean_up(&["globalcustomquota", name]);
        cluster.apply(&format!(
            "apiVersion: bulkhead.dev/v1alpha1\nkind: GlobalCustomQuota\nmetadata: {{name: {name}, labels: {labels}}}\nspec:\n  limit: 1\n  sources: [{{apiVersion: v1, kind: ConfigMap, op: count}}]\n  namespaceSelectors: [{{matchLabels: {{team: {team}}}}}]\n"
        ));
    }
    let (dave, _) = through_proxy(&cluster, &bulkhead, &w, "dave", "dave");
    // Without a grant, Dave's own RBAC answers.
    let err = dave.fails(&["get", "globalcustomquotas"]);
    assert!(err.contains("forbidden"), "{err}");
    // Capsule's example (012-globalproxysettings-global-proxy-settings.yaml), for Dave.
    cluster.clean_up(&["globalproxysettings", &settings]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: GlobalProxySettings\nmetadata: {{name: {settings}}}\nspec:\n  rules:\n  - subjects:\n    - {{kind: ServiceAccount, name: 'system:serviceaccount:{}:dave'}}\n    clusterResources:\n    - apiGroups: [bulkhead.dev]\n      resources: [globalcustomquotas]\n      operations: [List]\n      selector: {{matchLabels: {{team: {team}}}}}\n",
        w.accounts
    ));
    sees_exactly(
        &dave,
        &["get", "globalcustomquotas", "-o", "name"],
        &set(std::slice::from_ref(&green)),
    )
    .await;
    dave.ok(&["get", "globalcustomquota", &green]);
    let err = dave.fails(&["get", "globalcustomquota", &other]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");
    // List grants no delete.
    let err = dave.fails(&["delete", "globalcustomquota", &green]);
    assert!(
        err.contains("no GlobalProxySettings rule grants them Delete on it"),
        "{err}"
    );
    assert!(
        cluster
            .kubectl()
            .run(&["get", "globalcustomquota", &green])
            .status
            .success()
    );
    // Nothing else of his is narrowed or granted: his own RBAC answers the rest.
    let err = dave.fails(&["get", "nodes"]);
    assert!(err.contains("forbidden"), "{err}");
    let err = dave.fails(&["get", "customquotas", "-A"]);
    assert!(err.contains("forbidden"), "{err}");
    // Another subject is not granted.
    let (bob, _) = through_proxy(&cluster, &bulkhead, &w, "bob", &w.b);
    let err = bob.fails(&["get", "globalcustomquotas"]);
    assert!(err.contains("forbidden"), "{err}");
    // A rule on namespaces lists them, selected by name as in capsule-proxy's documentation.
    let reader = cluster.unique("e2e-gpx-ns");
    cluster.clean_up(&["globalproxysettings", &reader]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: GlobalProxySettings\nmetadata: {{name: {reader}}}\nspec:\n  rules:\n  - subjects: [{{kind: ServiceAccount, name: 'system:serviceaccount:{}:dave'}}]\n    clusterResources:\n    - apiGroups: ['']\n      resources: [namespaces]\n      operations: [List]\n      selector:\n        matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [{}]}}]\n",
        w.accounts, w.a_namespaces[1]
    ));
    sees_exactly(
        &dave,
        &["get", "namespaces", "-o", "name"],
        &set(&[w.a_namespaces[1].clone()]),
    )
    .await;
    cluster.kubectl().ok(&["delete", "globalproxysettings", &reader]);
    // The settings gone, so is the grant.
    cluster
        .kubectl()
        .ok(&["delete", "globalproxysettings", &settings]);
    eventually(std::time::Duration::from_secs(20), || async {
        let out = dave.run(&["get", "globalcustomquotas"]);
        (!out.status.success())
            .then_some(())
            .ok_or("still listed".to_owned())
    })
    .await;
}
