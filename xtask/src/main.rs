//! Project tasks. `cargo xtask crds [--check]` generates the chart's CRDs from the Rust types (or fails on
//! drift); `cargo xtask test` runs every test suite, setting up what they need first.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod controlplane;
mod dev;
mod fuzz;
mod test;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  crds [--check]   write charts/bulkhead/crds/ from crates/api and files/webhooks.json from crates/policy
                   (--check: fail if they differ)
  controlplane [build|up|k9s]
                   build the real control plane (etcd, kube-apiserver, kube-controller-manager) from
                   the Go modules in xtask/controlplane/ into $HOME/.cache/bulkhead/controlplane/;
                   (and helm); up: start it on loopback and serve until Ctrl-C; k9s: build k9s
  dev [ARGS...]    run Bulkhead against an in-memory cluster (the testkit); ARGS go to `bulkhead run`
  bench-controller the controller at scale (release build): BULKHEAD_BENCH_TENANTS (1000) tenants x
                   BULKHEAD_BENCH_NAMESPACES (3) namespaces on the testkit, or on BULKHEAD_E2E_KUBECONFIG
  bench-quota      tenant-scope quota overshoot under concurrent pod creation (release build):
                   BULKHEAD_BENCH_QUOTA (20) pods over BULKHEAD_BENCH_QUOTA_NAMESPACES (4) namespaces
  bench-custom-quota CustomQuota overshoot under BULKHEAD_BENCH_CQ (100) concurrent creates against room for
                   BULKHEAD_BENCH_CQ_LIMIT (25), through one and two webhooks, beside the API server alone
  bench-replication a GlobalTenantResource with 3 items over BULKHEAD_BENCH_TENANTS (200) tenants x
                   BULKHEAD_BENCH_NAMESPACES (5) namespaces (release build): time, writes, idle writes
  bench-proxy      the proxy (release build, proxy role only): a tenant's namespace list through the
                   proxy vs the API server with a label selector (BULKHEAD_BENCH_TENANTS (1000) x
                   BULKHEAD_BENCH_NAMESPACES (10)), passthrough GET overhead, requests/s at concurrency 16;
                   BULKHEAD_BENCH_HTTP2=1: the proxy offers HTTP/2 to the API server
  bench-namespaces namespace creates by a tenant user with Bulkhead's webhooks vs without (release
                   build): creates/s at concurrency 16 and one-at-a-time latency, side by side
  bench-scale      every role in one process at platform scale (release build, the real control plane
                   unless --testkit): BULKHEAD_BENCH_TENANTS (1000) tenants x BULKHEAD_BENCH_NAMESPACES
                   (10) namespaces with an Ingress each, 50 classes of each kind; convergence vs a plain
                   client, writes (idle, after kill -9), peak memory, proxy lists, webhook latency
  bench-fairness   one tenant flooding LISTs from BULKHEAD_BENCH_FLOOD_IDENTITIES (16) users while another
                   lists: alone, beside the flood with APF's defaults, and with apiFairness (release build,
                   a control plane of its own with BULKHEAD_BENCH_INFLIGHT (20) read seats)
  bench-*          take --controlplane to run on the real control plane (started for the run), and
                   --heap-profile for jemalloc heap profiles of the bulkhead process at each new peak
  bench-webhook    admission decisions (1,000 tenants, 10,000 namespaces) and AdmissionReview round
                   trips over TLS (criterion; `cargo bench -p bulkhead-webhook --bench admission`)
  fuzz [--seconds N] [TARGET...]
                   run each cargo-fuzz target in fuzz/ (nightly; installs cargo-fuzz if missing) for N
                   seconds (60), growing fuzz/corpus/; targets: admission_review, proxy_request,
                   label_selector, image_reference, tenant_spec
  e2e [ARGS...]    the end-to-end suite on the real control plane only (built or cached, started on
                   loopback, stopped after); ARGS go to the test runner (e.g. a test name filter)
  test [ARGS...]   run all tests: the Rust workspace (cargo nextest, else cargo test) and the chart
                   tests (real Helm, through a Python virtualenv it creates); ARGS go to the Rust runner";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("crds") => {
            let check = args.get(1).map(String::as_str) == Some("--check");
            crds(check).and_then(|()| webhooks(check))
        }
        Some("test") => test::run(&args[1..]),
        Some("controlplane") => controlplane::run(&args[1..]),
        Some("e2e") => test::e2e_on_controlplane(test::has_nextest(), &args[1..]),
        Some("dev") => dev::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("bench-controller") => bench("scale_many_tenants_converge", &args[1..]),
        Some("bench-quota") => bench("tenant_quota_overshoot", &args[1..]),
        Some("bench-custom-quota") => bench("custom_quota_overshoot", &args[1..]),
        Some("bench-replication") => bench("replication_converges_at_scale", &args[1..]),
        Some("bench-proxy") => bench("proxy_overhead_and_filtered_lists", &args[1..]),
        Some("bench-namespaces") => bench("namespace_creates_with_and_without_webhooks", &args[1..]),
        Some("bench-scale") => {
            let mut args = args[1..].to_vec();
            if !args.iter().any(|a| a == "--testkit") {
                args.push("--controlplane".to_owned());
            }
            bench("scale_every_role_in_one_process", &args)
        }
        Some("bench-fairness") => bench_fairness(&args[1..]),
        Some("bench-webhook") => run_cmd(
            Command::new("cargo")
                .args(["bench", "-p", "bulkhead-webhook", "--bench", "admission"])
                .current_dir(root()),
        ),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask bench-fairness`: the benchmark starts a control plane of its own (with a small
/// concurrency limit), so only the built binaries and the chart's Python are needed here.
fn bench_fairness(args: &[String]) -> Result<()> {
    controlplane::ensure_built()?;
    let python = test::chart_python()?;
    bench_with(
        "a_flooding_tenant_leaves_the_others_their_share",
        args,
        &[("BULKHEAD_E2E_PYTHON", python.as_os_str())],
    )
}

/// The workspace root (xtask lives one level below it).
pub(crate) fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn crds(check: bool) -> Result<()> {
    let dir = root().join("charts/bulkhead/crds");
    let mut expected = Vec::new();
    for crd in bulkhead_api::crds::all() {
        let name = bulkhead_api::crds::file_name(&crd);
        let violations = bulkhead_api::crds::structural_violations(&crd);
        if !violations.is_empty() {
            bail!(
                "{name} is not a structural schema:\n  {}",
                violations.join("\n  ")
            );
        }
        let yaml = bulkhead_api::crds::to_yaml(&crd).with_context(|| format!("rendering {name}"))?;
        expected.push((name, yaml));
    }
    let existing: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    let stale: Vec<&String> = existing
        .iter()
        .filter(|n| !expected.iter().any(|(e, _)| e == *n))
        .collect();
    if check {
        let mut drift: Vec<String> = stale
            .iter()
            .map(|n| format!("{n} (no longer generated)"))
            .collect();
        for (name, yaml) in &expected {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(current) if current == *yaml => {}
                Ok(_) => drift.push(format!("{name} (differs)")),
                Err(_) => drift.push(format!("{name} (missing)")),
            }
        }
        if !drift.is_empty() {
            bail!(
                "charts/bulkhead/crds/ is out of date with crates/api; run `cargo xtask crds`:\n  {}",
                drift.join("\n  ")
            );
        }
        println!(
            "charts/bulkhead/crds/ matches crates/api ({} CRDs)",
            expected.len()
        );
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for name in stale {
        std::fs::remove_file(dir.join(name)).with_context(|| format!("removing stale {name}"))?;
    }
    for (name, yaml) in &expected {
        std::fs::write(dir.join(name), yaml).with_context(|| format!("writing {name}"))?;
    }
    println!("wrote {} CRDs to {}", expected.len(), dir.display());
    Ok(())
}

/// The chart's copy of the webhook configurations and admission policies, from the same functions the
/// controller applies,
/// with placeholders the chart fills in (`__NAME__`, `__NAMESPACE__`, `__SERVICE__`, `"__PORT__"`,
/// `'__USER_GROUPS__'`) and no caBundle (the controller or cert-manager adds it).
fn webhooks_json() -> Result<String> {
    use bulkhead_policy::webhooks::{Endpoint, configurations};
    let endpoint = Endpoint::Service {
        namespace: "__NAMESPACE__".into(),
        name: "__SERVICE__".into(),
        port: 443,
    };
    let (mutating, validating) = configurations(
        "__NAME__",
        &endpoint,
        "",
        &["__USER_GROUPS__".to_owned()],
        "__NAMESPACE__",
    );
    let mut objects = Vec::new();
    for (policy, binding) in bulkhead_policy::webhooks::admission_policies(
        "__NAME__",
        &["__USER_GROUPS__".to_owned()],
        "__NAMESPACE__",
    ) {
        for (kind, object) in [
            ("ValidatingAdmissionPolicy", serde_json::to_value(&policy)?),
            (
                "ValidatingAdmissionPolicyBinding",
                serde_json::to_value(&binding)?,
            ),
        ] {
            let mut typed =
                serde_json::json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind});
            if let (Some(out), Some(fields)) = (typed.as_object_mut(), object.as_object()) {
                out.extend(fields.clone());
            }
            objects.push(typed);
        }
    }
    for (api, kind, mut object) in [
        (
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            serde_json::to_value(&mutating)?,
        ),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            serde_json::to_value(&validating)?,
        ),
    ] {
        for hook in object["webhooks"].as_array_mut().into_iter().flatten() {
            if let Some(config) = hook["clientConfig"].as_object_mut() {
                config.remove("caBundle");
            }
            hook["clientConfig"]["service"]["port"] = serde_json::json!("__PORT__");
        }
        let mut typed = serde_json::json!({"apiVersion": api, "kind": kind});
        if let (Some(out), Some(fields)) = (typed.as_object_mut(), object.as_object()) {
            out.extend(fields.clone());
        }
        objects.push(typed);
    }
    Ok(serde_json::to_string_pretty(&objects)? + "\n")
}

/// Writes (or, with `check`, compares) `charts/bulkhead/files/webhooks.json`.
fn webhooks(check: bool) -> Result<()> {
    let path = root().join("charts/bulkhead/files/webhooks.json");
    let expected = webhooks_json()?;
    if check {
        match std::fs::read_to_string(&path) {
            Ok(current) if current == expected => {
                println!("charts/bulkhead/files/webhooks.json matches crates/policy");
                Ok(())
            }
            _ => bail!(
                "charts/bulkhead/files/webhooks.json is out of date with crates/policy; run `cargo xtask crds`"
            ),
        }
    } else {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, expected).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    }
}

/// Runs one of the ignored benchmark tests of the e2e suite in a release build.
fn bench(test: &str, args: &[String]) -> Result<()> {
    bench_with(test, args, &[])
}

fn bench_with(test: &str, args: &[String], envs: &[(&str, &std::ffi::OsStr)]) -> Result<()> {
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--release", "-p", "bulkhead", "--test", "e2e"])
        .envs(envs.iter().copied())
        .current_dir(root());
    // --heap-profile: jemalloc samples allocations and writes a profile at each new peak of the
    // bulkhead process (read them with the `jeprof` the build leaves beside jemalloc).
    if args.iter().any(|a| a == "--heap-profile") {
        let dir = target_dir().join("heap-profile");
        std::fs::create_dir_all(&dir)?;
        cmd.args(["--features", "bulkhead/heap-profile"]);
        cmd.env(
            "_RJEM_MALLOC_CONF",
            format!(
                "prof:true,prof_gdump:true,lg_prof_sample:17,prof_prefix:{}/bulkhead",
                dir.display()
            ),
        );
        eprintln!("heap profiles: {}", dir.display());
    }
    cmd.args([test, "--", "--ignored", "--nocapture"]);
    // --controlplane: on the real control plane, started for the run (Bulkhead under the chart's RBAC).
    let _plane = if args.iter().any(|a| a == "--controlplane") {
        Some(test::controlplane_for(&mut cmd, false)?)
    } else {
        None
    };
    run_cmd(&mut cmd)
}

/// Where cargo puts build output.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Runs a command, failing with its name when it cannot start or exits non-zero.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}
