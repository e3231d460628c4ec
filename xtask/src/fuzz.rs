//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs each cargo-fuzz target (`fuzz/`) for a set time
//! on the nightly toolchain, growing the committed corpus in `fuzz/corpus/<target>/`. Installs
//! cargo-fuzz when it is missing. A crash leaves its input in `fuzz/artifacts/<target>/` and fails the
//! command; copy it into the corpus once fixed, and the workspace's corpus replay keeps it a test.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{root, run_cmd};

/// The targets: one file each in `fuzz/fuzz_targets/`, named as `fuzz/Cargo.toml` names its bins.
fn targets() -> Result<Vec<String>> {
    let dir = root().join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

pub fn run(args: &[String]) -> Result<()> {
    let targets = targets()?;
    let mut seconds: u64 = 60;
    let mut chosen = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => match rest.next().and_then(|s| s.parse().ok()) {
                Some(n) => seconds = n,
                None => bail!("--seconds takes a number"),
            },
            name if targets.iter().any(|t| t == name) => chosen.push(name.to_owned()),
            other => bail!(
                "unknown fuzz target or flag {other:?}; targets: {}",
                targets.join(", ")
            ),
        }
    }
    if chosen.is_empty() {
        chosen = targets;
    }
    let has_fuzz = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".to_owned());
    let target_dir = format!("{home}/.cache/bulkhead/fuzz-target");
    for target in &chosen {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        println!("==> fuzzing {target} for {seconds} s");
        run_cmd(
            Command::new("cargo")
                .args([
                    "+nightly",
                    "fuzz",
                    "run",
                    "--sanitizer",
                    "none",
                    "--target-dir",
                    &target_dir,
                    target,
                ])
                .arg(&corpus)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-max_len=65536",
                    "-rss_limit_mb=4096",
                ])
                .current_dir(root().join("fuzz")),
        )?;
    }
    Ok(())
}
