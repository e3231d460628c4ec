"""Renders and lints the chart with Helm's own library (helm-python-sdk) and checks what comes out."""

import os
import pathlib
import subprocess

import helm_python as helm
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent
ROOT = CHART.parent.parent
NAMESPACE = "bulkhead-system"
# The chart's default bindableClusterRoles: the only roles the controller may bind (strict RBAC).
BINDABLE = ("admin", "edit", "view", "bulkhead-namespace-deleter")


def render(values=None):
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values or {}, name="bulkhead", namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def by_name(objects, kind, name):
    matches = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def bulkhead_run_help():
    binary = os.environ.get("BULKHEAD_BIN")
    if binary:
        cmd = [binary, "run", "--help"]
    else:
        cmd = ["cargo", "run", "--quiet", "-p", "bulkhead", "--", "run", "--help"]
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_lint_passes_in_both_modes(mode):
    report = helm.lint(str(CHART), {"mode": mode}, strict=True, namespace=NAMESPACE)
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert errors == [], errors


def test_combined_mode_runs_every_role_in_one_deployment():
    objects = render({"mode": "combined", "replicas": 3})
    (deployment,) = of_kind(objects, "Deployment")
    assert deployment["metadata"]["name"] == "bulkhead"
    assert deployment["spec"]["replicas"] == 3
    c = container(deployment)
    assert c["args"][:2] == ["run", "--roles=controller,webhook,proxy"]
    assert f"--lease-namespace={NAMESPACE}" in c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"admin": 8080, "webhook": 9443, "proxy": 9001}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for role in ("controller", "webhook", "proxy"):
        assert labels[f"bulkhead.dev/role-{role}"] == "true"
    assert {e["name"] for e in c["env"]} >= {"POD_NAME", "POD_NAMESPACE"}


def test_split_mode_runs_one_deployment_per_role_with_its_own_replicas():
    objects = render({
        "mode": "split",
        "roles": {"controller": {"replicas": 2}, "webhook": {"replicas": 3}, "proxy": {"replicas": 5,
                  "resources": {"requests": {"cpu": "1"}}}},
    })
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    assert set(deployments) == {"bulkhead-controller", "bulkhead-webhook", "bulkhead-proxy"}
    for role, replicas in [("controller", 2), ("webhook", 3), ("proxy", 5)]:
        d = deployments[f"bulkhead-{role}"]
        c = container(d)
        assert d["spec"]["replicas"] == replicas
        assert c["args"][1] == f"--roles={role}"
        assert ("--lease-name=bulkhead-controller" in c["args"]) == (role == "controller")
        ports = {p["name"] for p in c["ports"]}
        expected = {"admin"} | ({role} if role in ("webhook", "proxy") else set())
        assert ports == expected, (role, ports)
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert [k for k in labels if k.startswith("bulkhead.dev/role-")] == [f"bulkhead.dev/role-{role}"]
    assert container(deployments["bulkhead-proxy"])["resources"] == {"requests": {"cpu": "1"}}
    # A role with no resources of its own gets the chart-wide ones.
    assert container(deployments["bulkhead-webhook"])["resources"]["limits"] == {"memory": "512Mi"}
    pdbs = {p["metadata"]["name"] for p in of_kind(objects, "PodDisruptionBudget")}
    assert pdbs == {"bulkhead-controller", "bulkhead-webhook", "bulkhead-proxy"}


def test_an_unknown_mode_is_refused():
    with pytest.raises(helm.HelmError, match="mode must be combined or split"):
        render({"mode": "sideways"})


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_services_reach_the_pods_running_their_role(mode):
    objects = render({"mode": mode})
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in of_kind(objects, "Deployment")]
    for name, port_name in [("bulkhead-webhook", "webhook"), ("bulkhead-proxy", "proxy"), ("bulkhead-metrics", "admin")]:
        svc = by_name(objects, "Service", name)
        selector = svc["spec"]["selector"]
        targets = [labels for labels in pod_labels if all(labels.get(k) == v for k, v in selector.items())]
        assert targets, f"{name} selects no pods"
        (port,) = svc["spec"]["ports"]
        assert port["targetPort"] == port_name
        # Every selected pod exposes the target port.
        for d in of_kind(objects, "Deployment"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            if all(labels.get(k) == v for k, v in selector.items()):
                assert port_name in {p["name"] for p in container(d)["ports"]}
    assert by_name(objects, "Service", "bulkhead-webhook")["spec"]["ports"][0]["port"] == 443


def test_rbac_is_least_privilege_for_what_bulkhead_does():
    objects = render()
    role = by_name(objects, "ClusterRole", "bulkhead")
    rules = sorted(
        (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r.get("resourceNames", [])), tuple(sorted(r["verbs"])))
        for r in role["rules"]
    )
    write = ("create", "delete", "get", "list", "patch", "update", "watch")
    own = ("bulkhead-namespace-provisioner", "bulkhead-namespace-deleter")
    assert rules == sorted([
        # Fair shares: server-side apply (create, patch) of what it made (list, watch), deletes.
        (("flowcontrol.apiserver.k8s.io",), ("flowschemas", "prioritylevelconfigurations"), (), ("create", "delete", "list", "patch", "watch")),
        (("bulkhead.dev",), ("tenants", "tenantowners", "bulkheadconfigurations"), (), ("get", "list", "watch")),
        (("gateway.networking.k8s.io",), ("httproutes", "grpcroutes", "tlsroutes", "gatewayclasses"), (), ("get", "list", "watch")),
        (("resource.k8s.io",), ("deviceclasses",), (), ("get", "list", "watch")),
        (("bulkhead.dev",), ("tenants/status", "globaltenantresources/status", "tenantresources/status"), (), ("get", "patch", "update")),
        (("bulkhead.dev",), ("globaltenantresources", "tenantresources"), (), ("get", "list", "patch", "update", "watch")),
        # CustomQuotas: the webhook reserves and the controller counts, both in the status.
        (("bulkhead.dev",), ("customquotas", "globalcustomquotas"), (), ("get", "list", "watch")),
        (("bulkhead.dev",), ("customquotas/status", "globalcustomquotas/status"), (), ("get", "patch", "update")),
        # ResourcePools: finalizer and release annotation (patch), bound claims of a deleted pool (delete).
        (("bulkhead.dev",), ("resourcepools", "resourcepoolclaims"), (), ("delete", "get", "list", "patch", "update", "watch")),
        (("bulkhead.dev",), ("resourcepools/status", "resourcepoolclaims/status"), (), ("get", "patch", "update")),
        (("",), ("serviceaccounts",), (), ("impersonate",)),
        (("",), ("configmaps", "secrets", "serviceaccounts"), (), ("create", "delete", "get", "list", "patch", "update", "watch")),
        (("",), ("namespaces",), (), ("create", "get", "list", "patch", "watch")),
        (("",), ("resourcequotas", "limitranges"), (), write),
        (("networking.k8s.io",), ("networkpolicies",), (), write),
        (("rbac.authorization.k8s.io",), ("rolebindings",), (), write),
        (("events.k8s.io",), ("events",), (), ("create", "patch")),
        (("rbac.authorization.k8s.io",), ("clusterroles",), BINDABLE, ("bind",)),
        (("rbac.authorization.k8s.io",), ("clusterroles", "clusterrolebindings"), (), ("create",)),
        (("rbac.authorization.k8s.io",), ("clusterroles",), own, ("escalate", "get", "patch", "update")),
        (("rbac.authorization.k8s.io",), ("clusterrolebindings",), ("bulkhead-namespace-provisioner",), ("get", "patch", "update")),
        (("",), ("persistentvolumes", "nodes", "services"), (), ("get", "list", "watch")),
        (("storage.k8s.io",), ("storageclasses",), (), ("get", "list", "watch")),
        (("networking.k8s.io",), ("ingressclasses", "ingresses"), (), ("get", "list", "watch")),
        (("scheduling.k8s.io",), ("priorityclasses",), (), ("get", "list", "watch")),
        (("node.k8s.io",), ("runtimeclasses",), (), ("get", "list", "watch")),
        (("admissionregistration.k8s.io",), ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"), (), ("create",)),
        (("admissionregistration.k8s.io",), ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"), ("bulkhead",), ("get", "patch", "update")),
        (("admissionregistration.k8s.io",), ("validatingadmissionpolicies", "validatingadmissionpolicybindings"), (), ("create",)),
        (("admissionregistration.k8s.io",), ("validatingadmissionpolicies", "validatingadmissionpolicybindings"), ("bulkhead-namespace-ownership", "bulkhead-tenant-prevent-deletion"), ("get", "patch", "update")),
    ])
    # The controller and webhook impersonate only ServiceAccounts: never users or groups (system:masters).
    impersonated = {res for r in role["rules"] if "impersonate" in r["verbs"] for res in r["resources"]}
    assert impersonated == {"serviceaccounts"}
    # Namespaces may be created (a Tenant's defaultNamespaces), labelled and annotated, never deleted
    # by Bulkhead itself: a namespace and its data go only with their Tenant, by garbage collection.
    ns_verbs = {v for r in role["rules"] if "namespaces" in r["resources"] for v in r["verbs"]}
    assert not ns_verbs & {"delete", "deletecollection", "update"}
    # Escalation only on Bulkhead's own roles.
    for r in role["rules"]:
        if "escalate" in r["verbs"]:
            assert r["resourceNames"] == list(own)
    binding = by_name(objects, "ClusterRoleBinding", "bulkhead")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bulkhead", "namespace": NAMESPACE}]
    lease_role = by_name(objects, "Role", "bulkhead-leader-election")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    for rule in lease_role["rules"]:
        assert rule["resources"] == ["leases"]
        if rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == ["bulkhead-controller"]
    tls_role = by_name(objects, "Role", "bulkhead-webhook-tls")
    assert sorted((tuple(r.get("resourceNames", [])), tuple(r["verbs"])) for r in tls_role["rules"]) == sorted([
        (("bulkhead-webhook-tls",), ("get",)),
        ((), ("create",)),
        (("bulkhead-webhook-tls",), ("patch", "update")),
    ])
    assert all(r["resources"] == ["secrets"] for r in tls_role["rules"])
    for r in role["rules"] + lease_role["rules"] + tls_role["rules"]:
        assert "*" not in r["verbs"] + r["resources"] + r["apiGroups"]


def test_tenant_admins_manage_resource_pool_claims_through_the_builtin_roles():
    objects = render()
    edit = by_name(objects, "ClusterRole", "bulkhead-resourcepoolclaims-edit")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert [r["resources"] for r in edit["rules"]] == [["resourcepoolclaims"]]
    assert "create" in edit["rules"][0]["verbs"]
    view = by_name(objects, "ClusterRole", "bulkhead-resourcepoolclaims-view")
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert sorted(view["rules"][0]["verbs"]) == ["get", "list", "watch"]
    # Nothing aggregates pools themselves: they are the administrators'.
    for role in of_kind(objects, "ClusterRole"):
        for rule in role.get("rules") or []:
            if any(lbl.startswith("rbac.authorization.k8s.io/aggregate-to") for lbl in role["metadata"]["labels"]):
                assert "resourcepools" not in rule["resources"]
    off = render({"resourcePools": {"claimsInBuiltinRoles": False}})
    assert not [r for r in of_kind(off, "ClusterRole") if "resourcepoolclaims" in r["metadata"]["name"]]


def test_custom_quotas_read_only_the_kinds_granted_for_counting():
    objects = render()
    role = by_name(objects, "ClusterRole", "bulkhead-quota-sources")
    # Not aggregated: the aggregation controller would re-create it during an uninstall.
    assert "aggregationRule" not in role
    assert role["rules"]
    for rule in role["rules"]:
        assert sorted(rule["verbs"]) == ["get", "list", "watch"]
        assert "secrets" not in rule["resources"] and "*" not in rule["resources"]
    binding = by_name(objects, "ClusterRoleBinding", "bulkhead-quota-sources")
    assert binding["roleRef"]["name"] == "bulkhead-quota-sources"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bulkhead", "namespace": NAMESPACE}]
    # None granted: a role with no rules, and quotas over any kind report forbidden until granted.
    none = render({"customQuotas": {"readableResources": []}})
    assert by_name(none, "ClusterRole", "bulkhead-quota-sources")["rules"] == []
    # The hook ships without rules: the controller keeps them, nothing else owns them.
    (validating,) = of_kind(objects, "ValidatingWebhookConfiguration")
    (hook,) = [w for w in validating["webhooks"] if w["name"] == "customquotas.validate.bulkhead.dev"]
    assert "rules" not in hook
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system", NAMESPACE]


def test_webhook_configurations_come_from_the_generated_file_and_point_at_the_service():
    objects = render({"configuration": {"userGroups": ["tenants", "it's"]}, "services": {"webhook": {"port": 8443}}})
    (mutating,) = of_kind(objects, "MutatingWebhookConfiguration")
    (validating,) = of_kind(objects, "ValidatingWebhookConfiguration")
    generated = {o["kind"]: o for o in __import__("json").loads((CHART / "files/webhooks.json").read_text())}
    for config in (mutating, validating):
        assert config["metadata"]["name"] == "bulkhead"
        assert config["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "bulkhead"
        assert "annotations" not in config["metadata"]
        assert [w["name"] for w in config["webhooks"]] == [w["name"] for w in generated[config["kind"]]["webhooks"]]
        for hook in config["webhooks"]:
            service = hook["clientConfig"]["service"]
            assert (service["name"], service["namespace"], service["port"]) == ("bulkhead-webhook", NAMESPACE, 8443)
            assert "caBundle" not in hook["clientConfig"]
            # The tenants webhook fails open: the API server's own policies hold what must hold.
            want = "Ignore" if hook["name"] == "tenants.validate.bulkhead.dev" else "Fail"
            assert hook["failurePolicy"] == want and hook["timeoutSeconds"] <= 5
            for condition in hook.get("matchConditions", []):
                if hook["name"] == "resourcepools.validate.bulkhead.dev":
                    # Every caller but Bulkhead's and kube-system's service accounts (in this release's namespace).
                    assert f"'system:serviceaccount:{NAMESPACE}:'" in condition["expression"], condition
                    continue
                assert condition["expression"].endswith("g in ['tenants', 'it\\'s'])"), condition
    # The admission policies the API server enforces itself, named after the configuration and bound.
    policies = {p["metadata"]["name"] for p in of_kind(objects, "ValidatingAdmissionPolicy")}
    bindings = {b["spec"]["policyName"] for b in of_kind(objects, "ValidatingAdmissionPolicyBinding")}
    assert policies == bindings == {"bulkhead-namespace-ownership", "bulkhead-tenant-prevent-deletion"}
    for p in of_kind(objects, "ValidatingAdmissionPolicy"):
        assert "annotations" not in p["metadata"]
        for condition in p["spec"].get("matchConditions", []):
            assert condition["expression"].endswith("g in ['tenants', 'it\\'s'])"), condition
    names = {w["name"] for w in validating["webhooks"]}
    assert {"namespaces.validate.bulkhead.dev", "pods.validate.bulkhead.dev", "tenants.validate.bulkhead.dev",
            "cordoned.validate.bulkhead.dev", "managed.validate.bulkhead.dev"} <= names
    (combined,) = of_kind(objects, "Deployment")
    args = container(combined)["args"]
    assert "--webhook-tls=managed" in args
    assert "--webhook-service-port=8443" in args
    assert "--identity=system:serviceaccount:bulkhead-system:bulkhead" in args
    assert of_kind(objects, "Certificate") == []


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_cert_manager_issues_the_certificate_and_injects_the_ca(mode):
    objects = render({"mode": mode, "webhook": {"tls": "certManager"}})
    (cert,) = of_kind(objects, "Certificate")
    assert cert["spec"]["secretName"] == "bulkhead-webhook-tls"
    assert cert["spec"]["dnsNames"][0] == f"bulkhead-webhook.{NAMESPACE}.svc"
    assert cert["spec"]["issuerRef"] == {"kind": "Issuer", "name": "bulkhead-selfsigned"}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        (config,) = of_kind(objects, kind)
        assert config["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/bulkhead-webhook"}
    for d in of_kind(objects, "Deployment"):
        args = container(d)["args"]
        roles = next(a for a in args if a.startswith("--roles=")).split("=", 1)[1].split(",")
        if "webhook" in roles:
            assert "--webhook-tls=external" in args and "--webhook-cert-dir=/var/run/bulkhead/webhook-tls" in args
            assert d["spec"]["template"]["spec"]["volumes"] == [{"name": "webhook-tls", "secret": {"secretName": "bulkhead-webhook-tls"}}]
        if "controller" in roles:
            assert "--webhook-tls=external" in args, "the controller must not manage certificates cert-manager issues"
    role = by_name(objects, "ClusterRole", "bulkhead")
    # Only the CustomQuota hook's rules, in the chart's own validating configuration: nothing else of
    # the webhook configurations is Bulkhead's to write when cert-manager injects the CA.
    assert [r for r in role["rules"] if "admissionregistration.k8s.io" in r["apiGroups"]] == [
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
         "resourceNames": ["bulkhead"], "verbs": ["get", "update"]},
    ]
    tls_role = by_name(objects, "Role", "bulkhead-webhook-tls")
    assert [r["verbs"] for r in tls_role["rules"]] == [["get"]]
    objects = render({"webhook": {"tls": "certManager", "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}}})
    assert of_kind(objects, "Issuer") == []
    (cert,) = of_kind(objects, "Certificate")
    assert cert["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


def test_an_unknown_webhook_tls_mode_is_refused():
    with pytest.raises(Exception, match="webhook.tls must be managed or certManager"):
        render({"webhook": {"tls": "vault"}})


def test_service_monitor_only_when_enabled():
    assert of_kind(render(), "ServiceMonitor") == []
    (sm,) = of_kind(render({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}), "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"


def test_the_default_configuration_is_rendered_from_values():
    (config,) = of_kind(render({"configuration": {"userGroups": ["tenants"], "protectedNamespaceRegex": "^kube-"}}),
                        "BulkheadConfiguration")
    assert config["metadata"]["name"] == "default"
    assert config["spec"]["userGroups"] == ["tenants"]
    assert config["spec"]["protectedNamespaceRegex"] == "^kube-"
    assert of_kind(render({"configuration": {"create": False}}), "BulkheadConfiguration") == []


def test_the_chart_ships_every_generated_crd():
    crds = helm.Chart.load(CHART).crds
    names = sorted(pathlib.Path(c["name"]).name for c in crds)
    assert names == sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert len(names) == 11
    kinds = set()
    for c in crds:
        doc = yaml.safe_load((CHART / c["name"]).read_text())
        assert doc["kind"] == "CustomResourceDefinition"
        assert doc["spec"]["group"] == "bulkhead.dev"
        kinds.add(doc["spec"]["names"]["kind"])
    assert kinds == {"Tenant", "BulkheadConfiguration", "GlobalTenantResource", "TenantResource", "ProxySetting", "TenantOwner", "CustomQuota", "GlobalCustomQuota", "ResourcePool", "ResourcePoolClaim", "GlobalProxySettings"}


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_every_flag_the_chart_passes_is_one_bulkhead_accepts(mode):
    help_text = bulkhead_run_help()
    for d in of_kind(render({"mode": mode}), "Deployment"):
        args = container(d)["args"]
        assert args[0] == "run"
        for arg in args[1:]:
            flag = arg.split("=", 1)[0]
            assert f"{flag} <" in help_text or f"{flag}\n" in help_text or f"{flag} " in help_text, flag


def test_replication_extra_rules_extend_the_cluster_role():
    rule = {"apiGroups": ["monitoring.coreos.com"], "resources": ["servicemonitors"],
            "verbs": ["get", "list", "create", "patch", "update", "delete"]}
    role = by_name(render({"replication": {"extraRules": [rule]}}), "ClusterRole", "bulkhead")
    assert rule in role["rules"]


def test_the_proxy_has_a_role_of_its_own_and_writes_only_when_asked():
    def proxy_rules(values=None):
        role = by_name(render(values), "ClusterRole", "bulkhead-proxy")
        return sorted(
            (tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in role["rules"]
        )
    read = ("get", "list", "watch")
    read_only = sorted([
        (("authentication.k8s.io",), ("tokenreviews",), ("create",)),
        (("authorization.k8s.io",), ("subjectaccessreviews",), ("create",)),
        (("",), ("users", "groups", "serviceaccounts"), ("impersonate",)),
        (("bulkhead.dev",), ("tenants", "tenantowners", "bulkheadconfigurations", "proxysettings", "globalproxysettings"), read),
        (("",), ("namespaces", "nodes", "persistentvolumes"), read),
        (("storage.k8s.io",), ("storageclasses",), read),
        (("networking.k8s.io",), ("ingressclasses",), read),
        (("scheduling.k8s.io",), ("priorityclasses",), read),
        (("node.k8s.io",), ("runtimeclasses",), read),
    ])
    assert proxy_rules() == read_only
    reflector = [r for r in proxy_rules({"proxy": {"roleBindingReflector": True}}) if r not in read_only]
    assert reflector == [(("rbac.authorization.k8s.io",), ("rolebindings",), ("list", "watch"))]
    args = [c for d in of_kind(render({"proxy": {"roleBindingReflector": True}}), "Deployment")
            for c in d["spec"]["template"]["spec"]["containers"][0]["args"]]
    assert "--proxy-role-binding-reflector=true" in args
    writes = [r for r in proxy_rules({"proxy": {"clusterScopedWrites": True}}) if r not in read_only]
    assert {res for _, resources, _ in writes for res in resources} == {
        "nodes", "persistentvolumes", "storageclasses", "ingressclasses", "priorityclasses", "runtimeclasses"}
    assert all(verbs == ("delete", "patch", "update") for _, _, verbs in writes)
    # GlobalProxySettings grants: exactly the rules given, nothing by default.
    kyverno = {"apiGroups": ["kyverno.io"], "resources": ["clusterpolicies"], "verbs": ["get", "list", "watch"]}
    granted = [r for r in proxy_rules({"proxy": {"globalResources": [kyverno]}}) if r not in read_only]
    assert granted == [(("kyverno.io",), ("clusterpolicies",), read)]
    binding = by_name(render(), "ClusterRoleBinding", "bulkhead-proxy")
    assert binding["roleRef"]["name"] == "bulkhead-proxy"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bulkhead", "namespace": NAMESPACE}]


@pytest.mark.parametrize("mode", ["combined", "split"])
def test_the_proxy_serves_a_mounted_certificate_or_one_for_its_service_names(mode):
    def proxy_pod(values):
        deployments = {d["metadata"]["name"]: d for d in of_kind(render({"mode": mode, **values}), "Deployment")}
        return deployments["bulkhead" if mode == "combined" else "bulkhead-proxy"]
    pod = proxy_pod({})
    args = container(pod)["args"]
    assert "--proxy-addr=0.0.0.0:9001" in args
    assert "--proxy-token-ttl=10s" in args
    assert "--proxy-upstream-http2=false" in args
    assert f"--proxy-hostname=bulkhead-proxy,bulkhead-proxy.{NAMESPACE},bulkhead-proxy.{NAMESPACE}.svc" in args
    assert not any(a.startswith("--proxy-cert-dir") or a.startswith("--proxy-client-ca") for a in args)
    pod = proxy_pod({"proxy": {"tls": {"secretName": "proxy-cert"}, "clientCertificates": True}})
    args = container(pod)["args"]
    assert "--proxy-cert-dir=/var/run/bulkhead/proxy-tls" in args
    assert "--proxy-client-ca=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt" in args
    volumes = {v["name"]: v for v in pod["spec"]["template"]["spec"]["volumes"]}
    assert volumes["proxy-tls"]["secret"]["secretName"] == "proxy-cert"
    mounts = {m["name"]: m["mountPath"] for m in container(pod)["volumeMounts"]}
    assert mounts["proxy-tls"] == "/var/run/bulkhead/proxy-tls"


def test_in_split_mode_only_proxy_pods_may_impersonate_users_and_groups():
    objects = render({"mode": "split"})
    accounts = {sa["metadata"]["name"] for sa in of_kind(objects, "ServiceAccount")}
    assert accounts == {"bulkhead", "bulkhead-proxy"}
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in of_kind(objects, "Deployment")}
    assert pods["bulkhead-proxy"]["serviceAccountName"] == "bulkhead-proxy"
    assert pods["bulkhead-controller"]["serviceAccountName"] == "bulkhead"
    assert pods["bulkhead-webhook"]["serviceAccountName"] == "bulkhead"
    proxy_args = container({"spec": {"template": {"spec": pods["bulkhead-proxy"]}}})["args"]
    assert f"--identity=system:serviceaccount:{NAMESPACE}:bulkhead-proxy" in proxy_args
    bindings = {b["metadata"]["name"]: b for b in of_kind(objects, "ClusterRoleBinding")}
    assert bindings["bulkhead-proxy"]["subjects"] == [{"kind": "ServiceAccount", "name": "bulkhead-proxy", "namespace": NAMESPACE}]
    assert bindings["bulkhead"]["subjects"] == [{"kind": "ServiceAccount", "name": "bulkhead", "namespace": NAMESPACE}]
    roles = {r["metadata"]["name"]: r for r in of_kind(objects, "ClusterRole")}
    may_impersonate_people = {
        name for name, role in roles.items()
        if any("impersonate" in r["verbs"] and {"users", "groups"} & set(r["resources"]) for r in role["rules"])
    }
    assert may_impersonate_people == {"bulkhead-proxy"}
    # Nothing else binds the proxy's ServiceAccount.
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for b in of_kind(objects, kind):
            if b["metadata"]["name"] != "bulkhead-proxy":
                assert all(s["name"] != "bulkhead-proxy" for s in b["subjects"]), b["metadata"]["name"]


def test_alerts_use_only_metric_names_bulkhead_registers():
    import re
    assert of_kind(render(), "PrometheusRule") == []
    (rule,) = of_kind(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    registered = set()
    for path in (ROOT / "crates").glob("*/src/**/*.rs"):
        registered |= set(re.findall(r'"(bulkhead_[a-z_]+)"', path.read_text()))
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) >= 8
    for alert in alerts:
        names = set(re.findall(r"\b(bulkhead_[a-z_]+)", alert["expr"]))
        assert names, alert["alert"]
        for name in names:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in registered or base in registered, f"{alert['alert']} uses {name}, which Bulkhead never registers"
    # Label values the alerts match on are ones the code emits.
    sources = "".join(p.read_text() for p in (ROOT / "crates").glob("*/src/**/*.rs"))
    for value in re.findall(r'result="([a-z]+)"', " ".join(a["expr"] for a in alerts)):
        assert f'"{value}"' in sources, value


def proxy_ingress(values):
    objects = render({"proxy": values})
    (ingress,) = of_kind(objects, "Ingress")
    return ingress, objects


PUBLIC = "tenants.example.com"


def test_the_proxy_behind_an_ingress_with_tls_passthrough_keeps_its_own_certificate():
    assert of_kind(render(), "Ingress") == []
    ingress, objects = proxy_ingress({
        "tls": {"secretName": "proxy-public", "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "acme-dns"}}},
        "clientCertificates": True,
        "ingress": {"enabled": True, "host": PUBLIC, "className": "nginx"},
    })
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/ssl-passthrough"] == "true"
    assert "nginx.ingress.kubernetes.io/whitelist-source-range" not in notes
    assert ingress["spec"]["ingressClassName"] == "nginx"
    # Passthrough: the Ingress holds no certificate of its own, the proxy's is what clients see.
    assert ingress["spec"]["tls"] == [{"hosts": [PUBLIC]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == PUBLIC
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "bulkhead-proxy", "port": {"name": "https"}}
    (cert,) = [c for c in of_kind(objects, "Certificate") if c["metadata"]["name"] == "bulkhead-proxy"]
    assert cert["spec"]["secretName"] == "proxy-public"
    assert PUBLIC in cert["spec"]["dnsNames"]
    assert cert["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "acme-dns"}
    args = container(by_name(objects, "Deployment", "bulkhead"))["args"]
    assert "--proxy-cert-dir=/var/run/bulkhead/proxy-tls" in args
    # Client certificates still reach the proxy.
    assert "--proxy-client-ca=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt" in args


def test_the_proxy_behind_an_ingress_with_reencryption_verifies_the_proxy_and_keeps_the_allow_list():
    ingress, _ = proxy_ingress({
        "tls": {"secretName": "proxy-internal"},
        "ingress": {
            "enabled": True, "host": PUBLIC,
            "tls": {"mode": "reencrypt", "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "letsencrypt"}}},
            "sourceRanges": ["10.0.0.0/8", "192.0.2.0/24"],
            # What keeps authentication sound cannot be switched off by an annotation.
            "annotations": {"team": "platform", "nginx.ingress.kubernetes.io/proxy-ssl-verify": "off"},
        },
    })
    notes = ingress["metadata"]["annotations"]
    assert notes == {
        "team": "platform",
        "cert-manager.io/cluster-issuer": "letsencrypt",
        "nginx.ingress.kubernetes.io/backend-protocol": "HTTPS",
        "nginx.ingress.kubernetes.io/proxy-ssl-verify": "on",
        "nginx.ingress.kubernetes.io/proxy-ssl-secret": f"{NAMESPACE}/proxy-internal",
        "nginx.ingress.kubernetes.io/proxy-ssl-name": f"bulkhead-proxy.{NAMESPACE}.svc",
        "nginx.ingress.kubernetes.io/proxy-ssl-server-name": "on",
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "nginx.ingress.kubernetes.io/proxy-request-buffering": "off",
        "nginx.ingress.kubernetes.io/whitelist-source-range": "10.0.0.0/8,192.0.2.0/24",
    }
    assert ingress["spec"]["tls"] == [{"hosts": [PUBLIC], "secretName": "bulkhead-proxy-ingress-tls"}]
    ingress, _ = proxy_ingress({
        "tls": {"secretName": "proxy-internal"},
        "ingress": {"enabled": True, "host": PUBLIC, "controller": "none",
                    "tls": {"mode": "reencrypt", "secretName": "public-cert", "certManager": {"issuerRef": {"name": "corp"}}}},
    })
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/issuer": "corp"}
    assert ingress["spec"]["tls"][0]["secretName"] == "public-cert"


@pytest.mark.parametrize("values, message", [
    ({"ingress": {"enabled": True}}, "proxy.ingress.host is required"),
    ({"ingress": {"enabled": True, "host": PUBLIC}},
     "passthrough shows clients the proxy's own certificate"),
    ({"tls": {"secretName": "p"}, "ingress": {"enabled": True, "host": PUBLIC, "sourceRanges": ["10.0.0.0/8"]}},
     "sourceRanges cannot hold with tls.mode=passthrough"),
    ({"ingress": {"enabled": True, "host": PUBLIC, "tls": {"mode": "reencrypt", "secretName": "c"}}},
     "reencrypt needs proxy.tls.secretName"),
    ({"tls": {"secretName": "p"}, "clientCertificates": True,
      "ingress": {"enabled": True, "host": PUBLIC, "tls": {"mode": "reencrypt", "secretName": "c"}}},
     "no client certificate reaches the proxy"),
    ({"tls": {"secretName": "p"}, "ingress": {"enabled": True, "host": PUBLIC, "tls": {"mode": "reencrypt"}}},
     "needs proxy.ingress.tls.secretName"),
    ({"tls": {"secretName": "p"}, "ingress": {"enabled": True, "host": PUBLIC, "controller": "none",
      "tls": {"mode": "reencrypt", "secretName": "c"}, "sourceRanges": ["10.0.0.0/8"]}},
     "with controller=none put your controller's allow-list annotation"),
    ({"tls": {"secretName": "p"}, "ingress": {"enabled": True, "host": PUBLIC, "tls": {"mode": "terminate"}}},
     "tls.mode must be passthrough or reencrypt"),
    ({"tls": {"secretName": "p"}, "ingress": {"enabled": True, "host": PUBLIC, "controller": "traefik"}},
     "controller must be ingress-nginx or none"),
    ({"tls": {"certManager": {"issuerRef": {"name": "x"}}}}, "needs proxy.tls.secretName"),
])
def test_a_proxy_ingress_that_would_break_authentication_is_refused(values, message):
    with pytest.raises(Exception, match=message.replace(".", r"\.")):
        render({"proxy": values})


def test_lint_passes_with_the_proxy_behind_an_ingress():
    values = {"proxy": {"tls": {"secretName": "p"}, "ingress": {"enabled": True, "host": PUBLIC}}}
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert errors == [], errors


def test_api_fairness_reaches_the_configuration_only_when_enabled():
    (config,) = of_kind(render(), "BulkheadConfiguration")
    assert "apiFairness" not in config["spec"]
    tiers = [{"name": "standard", "nominalConcurrencyShares": 30}, {"name": "gold", "nominalConcurrencyShares": 60}]
    (config,) = of_kind(
        render({"configuration": {"apiFairness": {"enabled": True, "matchingPrecedence": 4000, "tiers": tiers}}}),
        "BulkheadConfiguration",
    )
    assert config["spec"]["apiFairness"] == {"matchingPrecedence": 4000, "tiers": tiers}


def test_strict_rbac_binds_only_the_bindable_cluster_roles():
    # Strict by default: `bind` on the configured roles only, and the configuration says the same, so
    # the webhook refuses a Tenant naming another role instead of the API server refusing the binding.
    objects = render()
    role = by_name(objects, "ClusterRole", "bulkhead")
    binds = [r for r in role["rules"] if "bind" in r["verbs"]]
    assert binds == [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                      "resourceNames": ["admin", "edit", "view", "bulkhead-namespace-deleter"], "verbs": ["bind"]}]
    assert not any("*" in r["verbs"] or "*" in r["resources"] for r in role["rules"])
    (config,) = of_kind(objects, "BulkheadConfiguration")
    assert config["spec"]["bindableClusterRoles"] == ["admin", "edit", "view", "bulkhead-namespace-deleter"]
    # More roles: both follow. None: `bind` on every role, and no restriction in the configuration.
    more = render({"configuration": {"bindableClusterRoles": ["admin", "gateway-routes"]}})
    bind = [r for r in by_name(more, "ClusterRole", "bulkhead")["rules"] if "bind" in r["verbs"]]
    assert bind[0]["resourceNames"] == ["admin", "gateway-routes"]
    anything = render({"configuration": {"bindableClusterRoles": []}})
    bind = [r for r in by_name(anything, "ClusterRole", "bulkhead")["rules"] if "bind" in r["verbs"]]
    assert "resourceNames" not in bind[0]
    (config,) = of_kind(anything, "BulkheadConfiguration")
    assert "bindableClusterRoles" not in config["spec"]


def test_capsule_migration_reaches_the_configuration_only_when_set():
    (config,) = of_kind(render(), "BulkheadConfiguration")
    assert "capsuleMigration" not in config["spec"]
    (config,) = of_kind(render({"configuration": {"capsuleMigration": "Adopt"}}), "BulkheadConfiguration")
    assert config["spec"]["capsuleMigration"] == "Adopt"
