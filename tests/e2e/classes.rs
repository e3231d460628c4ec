//! Gateway API GatewayClasses and DRA DeviceClasses a tenant may use (`gatewayOptions.allowedClasses`,
//! `deviceClasses`): by name or by the class object's labels, the default injected into a Gateway
//! without a class, and every device request of a claim checked, not only the first
//! (GHSA-4qv9-xv9f-w5xh).

use std::time::Duration;

use crate::harness::{Bulkhead, Cluster, eventually};

async fn start(cluster: &Cluster, prefix: &str) -> Bulkhead {
    let lease = cluster.unique(&format!("{prefix}-lease"));
    let bulkhead = Bulkhead::start(cluster, &["--lease-namespace", "default", "--lease-name", &lease]);
    bulkhead.wait_ready().await;
    bulkhead
}

/// Applies `manifest` as the administrator until it is admitted (the webhook may not have seen the new
/// Tenant or class yet), or returns the last refusal after `tries`.
async fn apply_eventually(cluster: &Cluster, manifest: &str) {
    eventually(Duration::from_secs(60), || async {
        let out = cluster
            .kubectl()
            .run_with_input(&["apply", "-f", "-"], Some(manifest));
        out.status
            .success()
            .then_some(())
            .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
    })
    .await;
}

fn refused(cluster: &Cluster, manifest: &str) -> String {
    let out = cluster
        .kubectl()
        .run_with_input(&["apply", "-f", "-"], Some(manifest));
    assert!(!out.status.success(), "admitted:\n{manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn gateways_use_only_the_tenants_classes_and_get_its_default() {
    let cluster = Cluster::start().await;
    cluster.install_gateways();
    let t = cluster.unique("e2e-gw");
    let ns = format!("{t}-a");
    let (shared, gold, other) = (format!("{t}-shared"), format!("{t}-gold"), format!("{t}-other"));
    for (class, labels) in [(&shared, "{}"), (&gold, "{tier: gold}"), (&other, "{}")] {
        cluster.clean_up(&["gatewayclass", class]);
        cluster.apply(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}, labels: {labels}}}\nspec: {{controllerName: example.com/gateway}}\n"
        ));
    }
    cluster.clean_up(&["tenant", &t]);
    cluster.clean_up(&["namespace", &ns]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: alice}}]\n  namespaceOptions: {{defaultNamespaces: [{{name: {ns}}}]}}\n  gatewayOptions:\n    allowedClasses: {{allowed: [{shared}], matchLabels: {{tier: gold}}, default: {shared}}}\n"
    ));
    let _bulkhead = start(&cluster, "e2e-gw").await;
    let gateway = |name: &str, class: Option<&str>| {
        let class = class
            .map(|c| format!("  gatewayClassName: {c}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{class}  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n"
        )
    };
    // By label, then by name; the default goes into a Gateway that names none.
    apply_eventually(&cluster, &gateway("gold", Some(&gold))).await;
    apply_eventually(&cluster, &gateway("plain", None)).await;
    let class = cluster.kubectl().ok(&[
        "get",
        "gateway",
        "plain",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.gatewayClassName}",
    ]);
    assert_eq!(class, shared);
    let err = refused(&cluster, &gateway("rogue", Some(&other)));
    assert!(
        err.contains(&format!(
            "gateway class `{other}` of gateway `rogue` is not allowed in tenant `{t}`"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn every_device_request_of_a_claim_names_an_allowed_device_class() {
    let cluster = Cluster::start().await;
    if cluster.is_testkit() {
        eprintln!(
            "not run on the testkit: it serves no resource.k8s.io (dynamic resource allocation); this test runs on the real control plane"
        );
        return;
    }
    let t = cluster.unique("e2e-dra");
    let ns = format!("{t}-a");
    let (gpu, fpga, labelled) = (format!("{t}-gpu"), format!("{t}-fpga"), format!("{t}-labelled"));
    for (class, labels) in [(&gpu, "{}"), (&fpga, "{}"), (&labelled, "{pool: tenants}")] {
        cluster.clean_up(&["deviceclass", class]);
        cluster.apply(&format!(
            "apiVersion: resource.k8s.io/v1\nkind: DeviceClass\nmetadata: {{name: {class}, labels: {labels}}}\nspec: {{}}\n"
        ));
    }
    cluster.clean_up(&["tenant", &t]);
    cluster.clean_up(&["namespace", &ns]);
    cluster.apply(&format!(
        "apiVersion: bulkhead.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  owners: [{{kind: User, name: alice}}]\n  namespaceOptions: {{defaultNamespaces: [{{name: {ns}}}]}}\n  deviceClasses: {{allowed: [{gpu}], matchLabels: {{pool: tenants}}}}\n"
    ));
    let _bulkhead = start(&cluster, "e2e-dra").await;
    let claim = |name: &str, requests: &str| {
        format!(
            "apiVersion: resource.k8s.io/v1\nkind: ResourceClaim\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  devices:\n    requests:\n{requests}"
        )
    };
    let exactly =
        |name: &str, class: &str| format!("    - {{name: {name}, exactly: {{deviceClassName: {class}}}}}\n");
    apply_eventually(&cluster, &claim("one", &exactly("a", &gpu))).await;
    apply_eventually(
        &cluster,
        &claim(
            "two",
            &format!("{}{}", exactly("a", &gpu), exactly("b", &labelled)),
        ),
    )
    .await;
    // The first request is allowed; the second's second alternative is not.
    let alternatives = format!(
        "{}    - name: b\n      firstAvailable: [{{name: b1, deviceClassName: {gpu}}}, {{name: b2, deviceClassName: {fpga}}}]\n",
        exactly("a", &gpu)
    );
    let err = refused(&cluster, &claim("sneaky", &alternatives));
    assert!(
        err.contains(&format!(
            "device class `{fpga}` of resource claim `sneaky` (spec.devices.requests[1].firstAvailable[1].deviceClassName) is not allowed in tenant `{t}`"
        )),
        "{err}"
    );
    let template = format!(
        "apiVersion: resource.k8s.io/v1\nkind: ResourceClaimTemplate\nmetadata: {{name: tpl, namespace: {ns}}}\nspec:\n  spec:\n    devices:\n      requests:\n      - {{name: a, exactly: {{deviceClassName: {gpu}}}}}\n      - {{name: b, exactly: {{deviceClassName: {fpga}}}}}\n"
    );
    let err = refused(&cluster, &template);
    assert!(
        err.contains(&format!(
            "device class `{fpga}` of resource claim template `tpl` (spec.spec.devices.requests[1].exactly.deviceClassName) is not allowed in tenant `{t}`"
        )),
        "{err}"
    );
}
