//! Faults on purpose (#16): what a replica, a restart or a kill leaves behind, and that nothing is lost
//! or written twice. docs/reliability.md lists what has been tried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::harness::{Bulkhead, Cluster, eventually};
use crate::scale::{create_tenants, start_controller, wait_converged};

/// The RoleBindings Bulkhead has made in the namespaces of tenants named `<prefix>-t*`.
async fn bindings_made(cluster: &Cluster, prefix: &str) -> usize {
    let api: Api<RoleBinding> = Api::all(cluster.admin.clone());
    let list = api
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|b| {
            b.metadata
                .namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with(&format!("{prefix}-t")))
        })
        .count()
}

/// RoleBinding writes a replica sent (its own client's count).
fn binding_writes(bulkhead: &Bulkhead) -> f64 {
    bulkhead.metric_sum("bulkhead_api_requests_total", |labels| {
        ["POST", "PUT", "PATCH"]
            .iter()
            .any(|v| labels.contains(&format!("verb=\"{v}\"")))
            && labels.contains("resource=\"rolebindings\"")
    })
}

/// RoleBinding writes the testkit served (create, update, patch), all clients together.
fn served_binding_writes(cluster: &Cluster) -> Option<u64> {
    cluster.testkit().map(|t| {
        t.writes()
            .iter()
            .filter(|((verb, resource), _)| verb != "delete" && resource.starts_with("rolebindings"))
            .map(|(_, n)| n)
            .sum()
    })
}

#[tokio::test]
async fn a_standby_takes_over_from_a_leader_killed_mid_converge_and_writes_only_what_is_missing() {
    let cluster = Cluster::start().await;
    let prefix = cluster.unique("e2e-kill");
    let lease = cluster.unique("e2e-kill-lease");
    // 60 keep the suite fast; `BULKHEAD_E2E_KILL_TENANTS=1000` is the figure (docs/reliability.md).
    let tenants_n: usize = std::env::var("BULKHEAD_E2E_KILL_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    let per_tenant = 2;
    // Each namespace: the owner's admin RoleBinding and the namespace deleter's.
    let wanted = tenants_n * per_tenant * 2;
    let mark = format!("bulkhead-bench={prefix}");
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
    let lease_args = ["--lease-duration", "3s", "--lease-retry-period", "200ms"];
    let mut leader = start_controller(&cluster, &lease, &lease_args);
    leader.wait_ready().await;
    eventually(Duration::from_secs(10), || async {
        (leader.metric("bulkhead_leader") == Some(1.0))
            .then_some(())
            .ok_or("the first replica does not lead".to_owned())
    })
    .await;
    let standby = start_controller(&cluster, &lease, &lease_args);
    standby.wait_ready().await;
    let served_before = served_binding_writes(&cluster);

    create_tenants(
        &cluster,
        &prefix,
        tenants_n,
        per_tenant,
        |_, name| json!({"owners": [{"kind": "User", "name": format!("{name}-owner")}]}),
    )
    .await;
    // Kill the leader once it has made some of the bindings, without letting it release the Lease.
    let made = eventually(Duration::from_secs(60), || async {
        let made = bindings_made(&cluster, &prefix).await;
        (made > 0).then_some(made).ok_or(format!("{made} bindings yet"))
    })
    .await;
    leader.kill();
    let killed = Instant::now();
    let at_kill = bindings_made(&cluster, &prefix).await;
    eprintln!("leader killed with {at_kill} of {wanted} RoleBindings made (first seen: {made})");
    assert_eq!(
        standby.metric("bulkhead_leader"),
        Some(0.0),
        "the standby led before the leader was gone"
    );

    // The standby waits out the Lease it was never handed, then leads.
    eventually(Duration::from_secs(10), || async {
        (standby.metric("bulkhead_leader") == Some(1.0))
            .then_some(())
            .ok_or("the standby has not taken over".to_owned())
    })
    .await;
    let took_over = killed.elapsed();
    assert!(
        took_over < Duration::from_secs(3) + Duration::from_secs(3),
        "took over after {took_over:?}, lease duration 3 s"
    );
    let converge_limit = Duration::from_secs(120.max(tenants_n as u64 / 2));
    wait_converged(&cluster, &prefix, tenants_n, per_tenant, converge_limit).await;
    assert_eq!(bindings_made(&cluster, &prefix).await, wanted);

    // Only what was missing is written: the standby's writes are the bindings not made at the kill
    // (plus at most the leader's writes in flight then); on the testkit, every binding once in all.
    let standby_writes = binding_writes(&standby) as usize;
    let missing = wanted - at_kill;
    eprintln!(
        "took over in {:.1}s; the standby wrote {standby_writes} RoleBindings, {missing} were missing",
        took_over.as_secs_f64()
    );
    assert!(
        standby_writes <= missing + 16,
        "the standby wrote {standby_writes} RoleBindings for {missing} missing"
    );
    if let (Some(after), Some(before)) = (served_binding_writes(&cluster), served_before) {
        assert_eq!(
            (after - before) as usize,
            wanted,
            "the two replicas together wrote the {wanted} RoleBindings more than once each"
        );
    }
    // And then it is idle.
    let settled = binding_writes(&standby);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        binding_writes(&standby),
        settled,
        "the standby keeps writing after converging"
    );
    cluster.clean_up(&["tenants", "-l", &mark]);
    cluster.clean_up(&["namespaces", "-l", &mark]);
}

/// Requests Bulkhead's shared client sent, by (verb, resource).
fn requests(bulkhead: &Bulkhead) -> std::collections::BTreeMap<(String, String), f64> {
    let (_, body) = bulkhead.admin_get("/metrics");
    body.lines()
        .filter_map(|l| l.strip_prefix("bulkhead_api_requests_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            Some(((label("verb")?, label("resource")?), value.trim().parse().ok()?))
        })
        .collect()
}

/// The API server of a test that stops and starts it: a control plane of the test's own on the real
/// run (the suite's is shared by every test), the testkit's server otherwise.
struct Restartable {
    own: Option<bulkhead_testkit::controlplane::ControlPlane>,
}

impl Restartable {
    fn stop(&mut self, cluster: &Cluster) {
        match self.own.as_mut() {
            Some(plane) => plane.stop_apiserver().expect("the API server stops"),
            None => cluster.testkit().expect("the testkit").pause(),
        }
    }

    fn start(&mut self, cluster: &Cluster) {
        match self.own.as_mut() {
            Some(plane) => plane.restart_apiserver().expect("the API server starts again"),
            None => cluster
                .testkit()
                .expect("the testkit")
                .resume()
                .expect("it serves again"),
        }
    }
}

#[tokio::test]
async fn the_api_server_restarting_loses_nothing_and_allows_nothing_it_should_not() {
    use bulkhead_testkit::controlplane;
    let own = if std::env::var_os(crate::harness::KUBECONFIG_ENV).is_some() {
        let bin = controlplane::bin_dir();
        if !controlplane::binaries_present(&bin) {
            eprintln!(
                "not run: restarting the API server needs a control plane of this test's own, and no built one is at {}",
                bin.display()
            );
            return;
        }
        Some(controlplane::ControlPlane::start_with(&bin, &[]).expect("a control plane of its own starts"))
    } else {
        None
    };
    let cluster = match &own {
        Some(plane) => Cluster::at(plane.kubeconfig().to_owned()).await,
        None => Cluster::start().await,
    };
    let mut plane = Restartable { own };
    let t = cluster.unique("e2e-restart");
    let alice = cluster.unique("alice");
    let lease = cluster.unique("e2e-restart-lease");
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  namespaceOptions: {{quota: 1}}\n"
    ));
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    let first = format!("{t}-a");
    cluster.clean_up(&["namespace", &first]);
    k.ok_eventually(Duration::from_secs(30), &["create", "namespace", &first])
        .await;
    let api: Api<RoleBinding> = Api::namespaced(cluster.admin.clone(), &first);
    eventually(Duration::from_secs(30), || async {
        let n = api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=bulkhead"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (n == 2).then_some(()).ok_or(format!("{n} bindings"))
    })
    .await;
    let before = requests(&bulkhead);

    // Away: Bulkhead says it is not ready.
    plane.stop(&cluster);
    let down = Instant::now();
    eventually(Duration::from_secs(20), || async {
        let (code, body) = bulkhead.admin_get("/readyz");
        (code == 503 && body.contains("[waiting] api server"))
            .then_some(())
            .ok_or(format!("/readyz {code}: {body}"))
    })
    .await;
    let noticed = down.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    plane.start(&cluster);
    // What was sent while the server was away failed: a watch caught relisting retries its list
    // with backoff until the server answers. Lists from here on are the ones that are answered.
    let restarted = requests(&bulkhead);

    // Back: the first request a tenant user makes is judged on what the cache held (the quota is
    // full), not let through while the watches reconnect.
    let second = format!("{t}-b");
    cluster.clean_up(&["namespace", &second]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = k.run(&["create", "namespace", &second]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "a namespace over the quota was admitted after the restart"
        );
        if err.contains("it has 1 of 1 namespaces") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer from the webhook after the restart: {err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let back = Instant::now();
    bulkhead.wait_ready().await;
    let ready_again = back.elapsed();

    // Every watch resumed: a change made now reaches the controller, which acts on it.
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  namespaceOptions:\n    quota: 1\n    additionalMetadata: {{labels: {{e2e-restart: back}}}}\n"
    ));
    eventually(Duration::from_secs(60), || async {
        let got = cluster.kubectl().ok(&[
            "get",
            "namespace",
            &first,
            "-o",
            "jsonpath={.metadata.labels.e2e-restart}",
        ]);
        (got == "back").then_some(()).ok_or(got)
    })
    .await;
    let after = requests(&bulkhead);
    let between = |from: &std::collections::BTreeMap<(String, String), f64>, verb: &str, resource: &str| {
        let key = (verb.to_owned(), resource.to_owned());
        after.get(&key).copied().unwrap_or(0.0) - from.get(&key).copied().unwrap_or(0.0)
    };
    let delta = |verb: &str, resource: &str| between(&before, verb, resource);
    // No relist storm: once the server is back, at most one list per watched kind (and one retry
    // of a list sent as it came up), whatever the server asked.
    for (verb, resource) in after.keys() {
        if verb == "LIST" {
            let n = between(&restarted, verb, resource);
            assert!(
                n <= 3.0,
                "{n} lists of {resource} after the restart: {after:?} (when the server came back: {restarted:?})"
            );
        }
    }
    assert!(
        delta("WATCH", "tenants") >= 1.0,
        "the Tenant watch did not resume: {after:?}"
    );
    // Nothing rewritten that had not changed.
    for resource in ["rolebindings", "resourcequotas", "limitranges", "networkpolicies"] {
        for verb in ["POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(
                delta(verb, resource),
                0.0,
                "{verb} {resource} after the restart: {after:?}"
            );
        }
    }
    let lists: f64 = after
        .keys()
        .filter(|(v, _)| v == "LIST")
        .map(|(v, r)| delta(v, r))
        .sum();
    eprintln!(
        "API server restart ({}): not ready {:.1} s after it stopped, ready {:.1} s after it was back, {lists} lists across the restart",
        if cluster.is_testkit() {
            "testkit"
        } else {
            "real control plane"
        },
        noticed.as_secs_f64(),
        ready_again.as_secs_f64()
    );
}

#[tokio::test]
async fn a_webhook_restarting_with_requests_in_flight_allows_nothing_it_should_not() {
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-inflight");
    let alice = cluster.unique("alice");
    let lease = cluster.unique("e2e-inflight-lease");
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: {alice}}}]\n  serviceOptions: {{allowedServices: {{nodePort: false}}}}\n"
    ));
    let mut bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
    let ns = format!("{t}-a");
    cluster.clean_up(&["namespace", &ns]);
    k.ok_eventually(Duration::from_secs(30), &["create", "namespace", &ns])
        .await;
    k.ok_eventually(
        Duration::from_secs(30),
        &["-n", &ns, "create", "service", "clusterip", "warm", "--tcp=80:80"],
    )
    .await;

    // Three clients create services without pause, every other one of a type the tenant may not use,
    // while the webhook's process is stopped (SIGTERM) and started again.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..3 {
        let k = cluster.kubectl_as(&alice, &["bulkhead.dev"]);
        let (ns, stop) = (ns.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let forbidden = i % 2 == 1;
                let kind = if forbidden { "nodeport" } else { "clusterip" };
                let name = format!("s{w}-{i}");
                let started = Instant::now();
                let out = k.run(&["-n", &ns, "create", "service", kind, &name, "--tcp=80:80"]);
                outcomes.push((
                    forbidden,
                    out.status.success(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                    started,
                ));
                i += 1;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = Instant::now();
    let status = bulkhead.terminate_and_restart();
    assert!(
        status.success(),
        "SIGTERM did not end the process cleanly: {status:?}"
    );
    bulkhead.wait_ready().await;
    let ready_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes: Vec<_> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();

    let mut wrongly_allowed = Vec::new();
    let (mut denied, mut failed_calls, mut created, mut refused_allowed) = (0, 0, 0, 0);
    for (forbidden, ok, err, _) in &outcomes {
        match (forbidden, ok) {
            (true, true) => wrongly_allowed.push(err.clone()),
            (true, false) if err.contains("of type `NodePort` is not allowed") => denied += 1,
            (true, false) => {
                assert!(
                    err.contains("failed calling webhook"),
                    "a NodePort service was refused for another reason: {err}"
                );
                failed_calls += 1;
            }
            (false, true) => created += 1,
            (false, false) => {
                assert!(
                    err.contains("failed calling webhook"),
                    "an allowed service was refused: {err}"
                );
                refused_allowed += 1;
            }
        }
    }
    assert!(
        wrongly_allowed.is_empty(),
        "NodePort services admitted: {}",
        wrongly_allowed.len()
    );
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(cluster.admin.clone(), &ns);
    let node_ports = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("NodePort"))
        .count();
    assert_eq!(node_ports, 0, "NodePort services exist in the tenant's namespace");
    // Served before and after the restart.
    let before = outcomes
        .iter()
        .filter(|(f, ok, _, at)| !f && *ok && *at < stopped_at)
        .count();
    let after = outcomes
        .iter()
        .filter(|(f, ok, _, at)| !f && *ok && *at > ready_at)
        .count();
    assert!(
        before > 0 && after > 0,
        "services created before: {before}, after: {after}"
    );
    eprintln!(
        "webhook restart with requests in flight: {} requests, {denied} denied by policy, {failed_calls} forbidden and {refused_allowed} allowed ones refused because the webhook could not be called (failurePolicy Fail), {created} allowed ones created, 0 admitted wrongly; down {:.1} s",
        outcomes.len(),
        ready_at.duration_since(stopped_at).as_secs_f64()
    );
}

#[tokio::test]
async fn a_thousand_watches_through_the_proxy_while_clients_come_and_go_leak_nothing() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::WatchParams;
    let cluster = Cluster::start().await;
    let t = cluster.unique("e2e-watches");
    let accounts = format!("{t}-accounts");
    let ns = format!("{t}-a");
    cluster.clean_up(&["namespace", &accounts]);
    cluster.clean_up(&["namespace", &ns]);
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {accounts}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: user, namespace: {accounts}}}\n---\napiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{name: 'system:serviceaccount:{accounts}:user'}}]\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{bulkhead.dev/tenant: {t}}}}}\n"
    ));
    let lease = cluster.unique("e2e-watches-lease");
    let bulkhead = Bulkhead::start(
        &cluster,
        &["--lease-namespace", "default", "--lease-name", &lease],
    );
    bulkhead.wait_ready().await;
    let client = bulkhead.proxy_client(&cluster, &accounts, "user").await;
    let api: Api<ConfigMap> = Api::namespaced(client, &ns);
    // The owner's binding is made by the controller a moment after the namespace.
    let rv = eventually(Duration::from_secs(30), || async {
        api.list(&ListParams::default())
            .await
            .map(|l| l.metadata.resource_version.unwrap_or_default())
            .map_err(|e| e.to_string())
    })
    .await;
    let gauge = |name: &str| bulkhead.metric(name).unwrap_or(-1.0);
    let baseline_tasks = gauge("bulkhead_tokio_alive_tasks");
    let baseline_rss = gauge("process_resident_memory_bytes");
    let open = |n: usize| {
        let (api, rv) = (api.clone(), rv.clone());
        async move {
            let mut watches = Vec::new();
            while watches.len() < n {
                let batch = futures::future::join_all((0..(n - watches.len()).min(50)).map(|_| {
                    let api = api.clone();
                    let rv = rv.clone();
                    async move {
                        let stream = api
                            .watch(&WatchParams::default().timeout(290), &rv)
                            .await
                            .expect("a watch opens");
                        Box::pin(stream)
                    }
                }))
                .await;
                watches.extend(batch);
            }
            watches
        }
    };
    let open_watches_are = |n: usize| async move {
        eventually(Duration::from_secs(30), || async {
            let got = gauge("bulkhead_proxy_open_watches");
            (got == n as f64)
                .then_some(())
                .ok_or(format!("{got} open watches, {n} expected"))
        })
        .await;
    };
    let started = Instant::now();
    let mut watches = open(1000).await;
    let opened_in = started.elapsed();
    open_watches_are(1000).await;
    let full_rss = gauge("process_resident_memory_bytes");
    let full_tasks = gauge("bulkhead_tokio_alive_tasks");
    // Clients come and go: a third of the watches end (the client goes away) and as many new ones
    // open, twelve times over.
    let mut rss = Vec::new();
    for _ in 0..12 {
        let keep = watches.split_off(330);
        drop(std::mem::replace(&mut watches, keep));
        open_watches_are(670).await;
        watches.extend(open(330).await);
        open_watches_are(1000).await;
        rss.push(gauge("process_resident_memory_bytes"));
    }
    let churned_tasks = gauge("bulkhead_tokio_alive_tasks");
    // The watches are live: a change reaches them.
    cluster.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: probe, namespace: {ns}}}\n"
    ));
    for watch in watches.iter_mut().step_by(97) {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.next()).await;
        assert!(
            matches!(event, Ok(Some(Ok(_)))),
            "a watch got no event: {event:?}"
        );
    }
    drop(watches);
    open_watches_are(0).await;
    let idle_tasks = eventually(Duration::from_secs(30), || async {
        let tasks = gauge("bulkhead_tokio_alive_tasks");
        (tasks <= baseline_tasks + 10.0).then_some(tasks).ok_or(format!(
            "{tasks} tasks alive, {baseline_tasks} before the watches"
        ))
    })
    .await;
    let last = *rss.last().unwrap();
    eprintln!(
        "1,000 proxy watches ({}): opened in {:.1} s; RSS {:.0} MiB before, {:.0} MiB full, {:.0} MiB after 6 rounds of 330 leaving and 330 coming, {:.0} MiB after 12; tasks {baseline_tasks} before, {full_tasks} full, {churned_tasks} after the rounds, {idle_tasks} after all closed",
        if cluster.is_testkit() {
            "testkit"
        } else {
            "real control plane"
        },
        opened_in.as_secs_f64(),
        baseline_rss / 1048576.0,
        full_rss / 1048576.0,
        rss[5] / 1048576.0,
        last / 1048576.0,
    );
    // Flat: the allocator settles in the first rounds (freed buffers are kept for reuse), then the same
    // number of watches costs the same however many clients came and went.
    assert!(
        last <= full_rss * 1.3 + 16.0 * 1048576.0,
        "RSS grew from {full_rss} to {last} bytes"
    );
    assert!(
        last <= rss[5] * 1.1,
        "RSS still growing after the allocator settled: {rss:?}"
    );
    assert!(
        churned_tasks <= full_tasks + 20.0,
        "tasks grew from {full_tasks} to {churned_tasks}"
    );
}
