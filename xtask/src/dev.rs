//! `cargo xtask dev`: Bulkhead running against a cluster on this machine, no cluster needed. By default
//! the real control plane (etcd, kube-apiserver, kube-controller-manager built from their Go modules,
//! see `cargo xtask controlplane`); with `--testkit` the in-memory testkit API server. Installs
//! Bulkhead's CRDs, starts `bulkhead run` against it, and tells how to point kubectl at it. Ctrl-C
//! stops everything; so does killing xtask (every child dies with it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bulkhead_testkit::controlplane::{ControlPlane, KUBERNETES_VERSION, dying_with_parent};

use crate::{root, run_cmd, target_dir};

/// Where the testkit listens during `cargo xtask dev --testkit`.
const TESTKIT_ADDR: &str = "127.0.0.1:6443";

struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let testkit = args.iter().any(|a| a == "--testkit");
    let extra: Vec<&String> = args.iter().filter(|a| *a != "--testkit").collect();
    let root = root();
    run_cmd(
        Command::new("cargo")
            .args(["build", "--quiet", "-p", "bulkhead-testkit", "-p", "bulkhead"])
            .current_dir(&root),
    )?;
    let target = target_dir();
    let kubeconfig = target.join("dev.kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let mut bulkhead_args: Vec<String> = Vec::new();
    // Whichever runs stops when these go.
    let mut testkit_process: Option<Guard> = None;
    let mut control_plane: Option<ControlPlane> = None;
    let what = if testkit {
        testkit_process = Some(start_testkit(&target, &kubeconfig)?);
        "an in-memory cluster (the testkit)".to_owned()
    } else {
        let bin = crate::controlplane::ensure_built()?;
        let plane = ControlPlane::start_with(&bin, &[]).context("starting the control plane")?;
        std::fs::copy(plane.kubeconfig(), &kubeconfig)?;
        install_crds(&kubeconfig, &target)?;
        // The administrator's client certificate is accepted by the proxy too.
        let ca = plane.dir().join("ca.crt");
        bulkhead_args.extend(["--proxy-client-ca".to_owned(), ca.to_string_lossy().into_owned()]);
        let what = format!(
            "the real control plane (Kubernetes {KUBERNETES_VERSION}, no nodes) at {}",
            plane.url()
        );
        control_plane = Some(plane);
        what
    };
    println!("Bulkhead's CRDs are installed in {what}. In another shell:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl apply -f examples/tenant-full.yaml && kubectl get tenants");
    println!("  kubectl create namespace solar-dev --as alice --as-group bulkhead.dev");
    println!("  curl -s localhost:8080/readyz; curl -s localhost:8080/metrics | grep bulkhead_");
    println!(
        "  kubectl --server https://127.0.0.1:9001 --insecure-skip-tls-verify --as alice --as-group bulkhead.dev get ns"
    );
    println!("Starting bulkhead (Ctrl-C stops everything)...\n");
    let status = dying_with_parent(&target.join("debug/bulkhead"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--namespace", "default", "--admin-addr", "127.0.0.1:8080"])
        // The API server calls the webhook by URL: register this process's webhook at its address.
        .args([
            "--webhook-addr",
            "127.0.0.1:9443",
            "--webhook-url",
            "https://127.0.0.1:9443",
            "--proxy-addr",
            "127.0.0.1:9001",
        ])
        .args(&bulkhead_args)
        .args(extra)
        .status()
        .context("starting bulkhead")?;
    drop(control_plane);
    drop(testkit_process);
    if !status.success() && status.code() != Some(130) {
        bail!("bulkhead exited with {status}");
    }
    Ok(())
}

fn start_testkit(target: &Path, kubeconfig: &Path) -> Result<Guard> {
    let mut guard = Guard(Vec::new());
    guard.0.push(
        dying_with_parent(&target.join("debug/testkit"))
            .args(["--addr", TESTKIT_ADDR, "--kubeconfig"])
            .arg(kubeconfig)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the testkit")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        if let Some(status) = guard.0[0].try_wait().context("watching the testkit")? {
            bail!("the testkit stopped ({status}) before it served on {TESTKIT_ADDR}");
        }
        if Instant::now() > deadline {
            bail!("the testkit did not start on {TESTKIT_ADDR} (is the port taken?)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(guard)
}

/// Applies Bulkhead's CRDs (server-side, as `bulkhead crds | kubectl apply` would) and waits until the
/// API server serves them.
fn install_crds(kubeconfig: &Path, target: &Path) -> Result<()> {
    let mut all = String::new();
    for crd in bulkhead_api::crds::all() {
        all.push_str("---\n");
        all.push_str(&bulkhead_api::crds::to_yaml(&crd)?);
    }
    let file: PathBuf = target.join("dev-crds.yaml");
    std::fs::write(&file, all)?;
    let kubectl = |args: &[&str]| {
        run_cmd(
            Command::new("kubectl")
                .env("KUBECONFIG", kubeconfig)
                .args(args)
                .stdout(Stdio::null()),
        )
    };
    kubectl(&["apply", "--server-side", "-f", &file.to_string_lossy()])?;
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd",
        "--all",
        "--timeout=60s",
    ])
}
