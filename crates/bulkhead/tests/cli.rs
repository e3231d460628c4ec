//! The binary's command line: clear one-line errors, fast, and `bulkhead crds` matching the chart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test file: failing loudly is the point

use std::process::Command;
use std::time::{Duration, Instant};

fn bulkhead(args: &[&str]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
        .args(args)
        .output()
        .expect("bulkhead runs");
    (out, start.elapsed())
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last line of stderr: the error `main` prints (log lines may come before it).
fn error_line(out: &std::process::Output) -> String {
    stderr(out).lines().last().unwrap_or_default().to_owned()
}

#[test]
fn a_server_that_never_answers_is_a_clear_error_within_the_connect_timeout() {
    // A listener that accepts connections and says nothing: a hung API server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        bulkhead_testkit::kubeconfig_yaml(&format!("https://{addr}"), "not-a-ca", "token"),
    )
    .unwrap();
    let (out, took) = bulkhead(&[
        "run",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--connect-timeout",
        "1s",
        "--admin-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let line = error_line(&out);
    assert!(
        line.starts_with(&format!(
            "bulkhead: cannot reach the Kubernetes API server at https://{addr}/"
        )),
        "{line}"
    );
}

#[tokio::test]
async fn a_cluster_without_the_crds_is_told_how_to_install_them() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = bulkhead_testkit::TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server
        .write_kubeconfig(dir.path(), bulkhead_testkit::ADMIN_TOKEN)
        .unwrap();
    let path = kubeconfig.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        bulkhead(&["run", "--kubeconfig", &path, "--admin-addr", "127.0.0.1:0"]).0
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        error_line(&out),
        format!(
            "bulkhead: the Tenant CRD (tenants.bulkhead.dev) is not installed on {}/: run `bulkhead crds | kubectl apply -f -`",
            server.url()
        )
    );
}

#[test]
fn a_missing_kubeconfig_names_the_file() {
    let (out, _) = bulkhead(&["run", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.starts_with("bulkhead: cannot read kubeconfig /nonexistent/kubeconfig:"),
        "{line}"
    );
    let (out, _) = bulkhead(&["run", "--roles", "scheduler"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
    assert!(stderr(&out).contains("invalid value 'scheduler'"));
}

#[test]
fn crds_prints_exactly_what_the_chart_ships() {
    let (out, _) = bulkhead(&["crds"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/bulkhead/crds");
    let mut expected = String::new();
    for crd in bulkhead_api::crds::all() {
        expected.push_str("---\n");
        expected.push_str(&std::fs::read_to_string(dir.join(bulkhead_api::crds::file_name(&crd))).unwrap());
    }
    assert_eq!(printed, expected);
    let (out, _) = bulkhead(&["version"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("bulkhead {}\n", env!("CARGO_PKG_VERSION"))
    );
}
