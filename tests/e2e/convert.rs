//! `bulkhead convert` against the API server: for every Capsule manifest of both corpora, convert
//! says the result is accepted exactly when the API server accepts it under strict field validation
//! (a server-side dry run), so what it reports is what an administrator would meet.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::Cluster;

fn corpus(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn convert_says_what_the_api_server_accepts() {
    let cluster = Cluster::start().await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = corpus(&root.join("crates/api/tests/capsule-compat"));
    // The v0.15 corpus lives beside the checkout (CI and developers have it there).
    files.extend(corpus(&root.join("../shared/capsule-compat-0.15")));
    assert!(files.len() >= 65, "the corpora are missing");
    let (mut accepted, mut refused) = (0, 0);
    let mut disagreements = Vec::new();
    for file in &files {
        let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(["convert", "-f"])
            .arg(file)
            .output()
            .unwrap();
        let converted = String::from_utf8_lossy(&out.stdout).into_owned();
        let notes = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}: {notes}",
            file.display()
        );
        let convert_accepts = out.status.success();
        // Namespaced objects need their namespace to exist for the dry run.
        for line in converted.lines() {
            if let Some(ns) = line.trim().strip_prefix("namespace: ")
                && line.starts_with("  namespace:")
            {
                let ns = ns.trim();
                if cluster.kubectl().run(&["get", "namespace", ns]).status.success() {
                    continue;
                }
                cluster.kubectl().ok(&["create", "namespace", ns]);
                cluster.clean_up(&["namespace", ns]);
            }
        }
        let path = cluster.dir().join("converted.yaml");
        std::fs::write(&path, &converted).unwrap();
        let path = path.to_str().unwrap();
        // The testkit answers no dry run of a create: there the object is created and deleted again.
        let applied = if cluster.is_testkit() {
            cluster
                .kubectl()
                .run(&["create", "--validate=strict", "-f", path])
        } else {
            cluster
                .kubectl()
                .run(&["apply", "--dry-run=server", "--validate=strict", "-f", path])
        };
        let server_accepts = applied.status.success();
        if server_accepts && cluster.is_testkit() {
            cluster.kubectl().ok(&["delete", "-f", path]);
        }
        if server_accepts {
            accepted += 1;
        } else {
            refused += 1;
        }
        if convert_accepts != server_accepts {
            disagreements.push(format!(
                "{}: convert {}, the API server {}\n  convert: {}\n  server: {}",
                file.display(),
                if convert_accepts { "accepts" } else { "refuses" },
                if server_accepts { "accepts" } else { "refuses" },
                notes.trim(),
                String::from_utf8_lossy(&applied.stderr).trim()
            ));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    eprintln!(
        "bulkhead convert on {} Capsule manifests: {accepted} accepted by the API server, {refused} refused, as convert said",
        files.len()
    );
}
