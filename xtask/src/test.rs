//! `cargo xtask test`: the whole test run, the same on a laptop and in CI.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{root, run_cmd};

/// Python packages the chart tests need, pinned so every machine renders with the same Helm.
const PYTHON_REQUIREMENTS: &str = "charts/bulkhead/tests/requirements.txt";

pub(crate) fn run(args: &[String]) -> Result<()> {
    let root = root();
    let venv = venv_dir();
    ensure_venv(&venv)?;

    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut rust = Command::new("cargo");
    if nextest {
        rust.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        rust.args(["test", "--workspace", "--no-fail-fast"]);
    }
    rust.args(args).current_dir(&root);
    run_cmd(&mut rust).context("Rust tests")?;

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

/// Where cargo puts build output.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
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
