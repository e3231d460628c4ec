//! `cargo xtask dev`: Bulkhead running against an in-memory cluster, no cluster needed. Starts the
//! testkit API server (with Bulkhead's CRDs), then `bulkhead run` against it, and tells how to point
//! kubectl at it. Ctrl-C stops both.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{root, run_cmd};

/// Where the testkit listens during `cargo xtask dev`.
const ADDR: &str = "127.0.0.1:6443";

struct Guard(Vec<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(crate) fn run(extra: &[String]) -> Result<()> {
    let root = root();
    run_cmd(
        Command::new("cargo")
            .args(["build", "--quiet", "-p", "bulkhead-testkit", "-p", "bulkhead"])
            .current_dir(&root),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let kubeconfig = target.join("dev.kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let mut guard = Guard(Vec::new());
    guard.0.push(
        Command::new(target.join("debug/testkit"))
            .args(["--addr", ADDR, "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .spawn()
            .context("starting the testkit")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.exists() {
        if let Some(status) = guard.0[0].try_wait().context("watching the testkit")? {
            bail!("the testkit stopped ({status}) before it served on {ADDR}");
        }
        if Instant::now() > deadline {
            bail!("the testkit did not start on {ADDR} (is the port taken?)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("An in-memory cluster runs at https://{ADDR} with Bulkhead's CRDs. In another shell:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl apply -f examples/tenant-full.yaml && kubectl get tenants");
    println!("  kubectl create namespace solar-dev --as alice --as-group bulkhead.dev");
    println!("  curl -s localhost:8080/readyz; curl -s localhost:8080/metrics | grep bulkhead_");
    println!(
        "  kubectl --server https://127.0.0.1:9001 --insecure-skip-tls-verify --as alice --as-group bulkhead.dev get ns"
    );
    println!("Starting bulkhead (Ctrl-C stops everything)...\n");
    let status = Command::new(target.join("debug/bulkhead"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--namespace", "default", "--admin-addr", "127.0.0.1:8080"])
        // The testkit calls webhooks by URL: register this process's webhook at its address.
        .args([
            "--webhook-addr",
            "127.0.0.1:9443",
            "--webhook-url",
            "https://127.0.0.1:9443",
            "--proxy-addr",
            "127.0.0.1:9001",
        ])
        .args(extra)
        .status()
        .context("starting bulkhead")?;
    drop(guard);
    if !status.success() && status.code() != Some(130) {
        bail!("bulkhead exited with {status}");
    }
    Ok(())
}
