//! `cargo xtask test`: the whole test run, the same on a laptop and in CI.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use bulkhead_testkit::controlplane::ControlPlane;

use crate::{root, run_cmd, target_dir};

/// Python packages the chart tests need, pinned so every machine renders with the same Helm.
const PYTHON_REQUIREMENTS: &str = "charts/bulkhead/tests/requirements.txt";

pub(crate) fn run(args: &[String]) -> Result<()> {
    let root = root();
    let venv = venv_dir();
    ensure_venv(&venv)?;

    let nextest = has_nextest();
    let mut rust = Command::new("cargo");
    if nextest {
        rust.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        rust.args(["test", "--workspace", "--no-fail-fast"]);
    }
    rust.args(args).current_dir(&root);
    run_cmd(&mut rust).context("Rust tests")?;

    // The end-to-end suite again, on the real control plane, one test at a time (webhooks are
    // cluster-wide) and with Bulkhead under the chart's RBAC.
    e2e_on_controlplane(nextest, &[]).context("end-to-end tests on the real control plane")?;

    // The chart tests check the chart's flags against the binary's own --help.
    run_cmd(
        Command::new("cargo")
            .args(["build", "--quiet", "-p", "bulkhead"])
            .current_dir(&root),
    )
    .context("building bulkhead for the chart tests")?;
    run_cmd(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pytest", "-q", "charts/bulkhead/tests"])
            .env("BULKHEAD_BIN", target_dir().join("debug/bulkhead"))
            .current_dir(&root),
    )
    .context("chart tests")?;
    Ok(())
}

/// Builds (or finds cached) and starts the real control plane, runs the e2e suite against it with
/// `args` for the test runner, and stops it.
pub(crate) fn e2e_on_controlplane(nextest: bool, args: &[String]) -> Result<()> {
    let mut e2e = Command::new("cargo");
    if nextest {
        e2e.args([
            "nextest",
            "run",
            "-p",
            "bulkhead",
            "--test",
            "e2e",
            "--no-fail-fast",
            "-j",
            "1",
        ]);
        e2e.args(args);
    } else {
        e2e.args(["test", "-p", "bulkhead", "--test", "e2e", "--no-fail-fast"]);
        e2e.args(args);
        e2e.args(["--", "--test-threads=1"]);
    }
    let plane = controlplane_for(&mut e2e, true)?;
    e2e.current_dir(root());
    let mut result = run_cmd(&mut e2e);
    if result.is_ok() {
        result = nothing_left_behind(&plane);
    }
    if result.is_err() {
        eprintln!("control plane logs (tails):\n{}", plane.logs(2000));
    }
    drop(plane);
    result
}

/// Builds (or finds cached) and starts the real control plane, and points `cmd`'s e2e harness at it:
/// its kubeconfig, the Python that renders the chart, and (`with_helm`) the helm CLI. The control
/// plane stops when the returned handle goes.
pub(crate) fn controlplane_for(cmd: &mut Command, with_helm: bool) -> Result<ControlPlane> {
    let python = chart_python()?;
    let bin = crate::controlplane::ensure_built()?;
    if with_helm {
        cmd.env("BULKHEAD_E2E_HELM", crate::controlplane::ensure_helm()?);
    }
    let started = std::time::Instant::now();
    let plane = ControlPlane::start_with(&bin, &[]).context("starting the control plane")?;
    println!(
        "control plane (Kubernetes {}) ready at {} in {:.1} s",
        bulkhead_testkit::controlplane::KUBERNETES_VERSION,
        plane.url(),
        started.elapsed().as_secs_f64()
    );
    cmd.env("BULKHEAD_E2E_KUBECONFIG", plane.kubeconfig())
        .env("BULKHEAD_E2E_PYTHON", python);
    Ok(plane)
}

/// After the suite every namespace it made must go: a real API server keeps a namespace Terminating
/// while anything in it has a finalizer, so one left behind is a finalizer nobody will remove.
fn nothing_left_behind(plane: &ControlPlane) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", plane.kubeconfig())
            .args(["get", "namespaces", "-o", "name"])
            .output()
            .context("kubectl get namespaces")?;
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("namespace/"))
            .filter(|n| n.starts_with("e2e-"))
            .map(str::to_owned)
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            let mut report = String::new();
            for ns in &left {
                let out = Command::new("kubectl")
                    .env("KUBECONFIG", plane.kubeconfig())
                    .args(["get", "namespace", ns, "-o", "jsonpath={.status}"])
                    .output()?;
                report.push_str(&format!("\n  {ns}: {}", String::from_utf8_lossy(&out.stdout)));
            }
            anyhow::bail!("namespaces the suite made are still there 90 s after it ended:{report}");
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// The virtualenv's Python (made first if needed), which has Helm's library for the chart.
pub(crate) fn chart_python() -> Result<std::path::PathBuf> {
    let venv = venv_dir();
    ensure_venv(&venv)?;
    Ok(venv.join("bin/python"))
}

/// Whether cargo-nextest is installed.
pub(crate) fn has_nextest() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The virtualenv lives beside the build output so a persistent CARGO_TARGET_DIR keeps it between runs.
fn venv_dir() -> PathBuf {
    target_dir().join("xtask-venv")
}

fn ensure_venv(venv: &PathBuf) -> Result<()> {
    let requirements = root().join(PYTHON_REQUIREMENTS);
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join("requirements.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(());
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    run_cmd(Command::new(&python).args(["-m", "venv", "--clear"]).arg(venv))
        .context("creating the virtualenv")?;
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
    )
    .context("installing the chart test requirements")?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}
