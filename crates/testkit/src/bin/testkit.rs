//! Runs the testkit API server on its own, for trying things with kubectl:
//! `cargo run -p bulkhead-testkit -- [--addr 127.0.0.1:6443] [--kubeconfig FILE]`.
//! It installs Bulkhead's CRDs, writes an administrator kubeconfig, and serves until Ctrl-C.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let addr = value("--addr").unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let kubeconfig = value("--kubeconfig").unwrap_or_else(|| "testkit.kubeconfig".to_owned());
    let Ok(addr) = addr.parse() else {
        eprintln!("testkit: --addr {addr} is not an address like 127.0.0.1:6443");
        return ExitCode::from(2);
    };
    let server = match bulkhead_testkit::TestServer::start_on(addr).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("testkit: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.install_bulkhead_crds() {
        eprintln!("testkit: cannot install the CRDs: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&kubeconfig, server.kubeconfig(bulkhead_testkit::ADMIN_TOKEN)) {
        eprintln!("testkit: cannot write {kubeconfig}: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "testkit serving at {} (administrator kubeconfig: {kubeconfig})",
        server.url()
    );
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
