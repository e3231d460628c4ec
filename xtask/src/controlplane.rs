//! `cargo xtask controlplane`: builds the real control plane (etcd, kube-apiserver,
//! kube-controller-manager) from the Go modules pinned in `xtask/controlplane/*/go.mod` into a cache
//! under `$HOME/.cache` keyed by version, so only the first run on a machine pays for it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use bulkhead_testkit::controlplane::{
    ControlPlane, ETCD_VERSION, KUBERNETES_VERSION, bin_dir, binaries_present,
};

use crate::{root, run_cmd, target_dir};

/// The Go build modules and what each one builds: (module directory, package, binary name).
const BUILDS: [(&str, &str, &str); 3] = [
    ("etcd", "go.etcd.io/etcd/server/v3", "etcd"),
    (
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-apiserver",
    ),
    (
        "kubernetes",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-controller-manager",
    ),
];

/// Returns the directory holding the control plane binaries, building them first when they are not
/// cached yet.
pub(crate) fn ensure_built() -> Result<PathBuf> {
    let dir = bin_dir();
    if binaries_present(&dir) {
        return Ok(dir);
    }
    println!(
        "building the control plane (Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION}) into {}; \
         the first build takes about 10 minutes",
        dir.display()
    );
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let started = Instant::now();
    for (module, package, binary) in BUILDS {
        go_build(module, package, binary, &ldflags(binary), &partial.join(binary))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&partial, &dir).with_context(|| format!("moving the binaries to {}", dir.display()))?;
    println!(
        "built the control plane in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// `go build`s `package` (the binary `binary`) in the build module `xtask/controlplane/<module>` into `out`.
fn go_build(module: &str, package: &str, binary: &str, ldflags: &str, out: &std::path::Path) -> Result<()> {
    run_cmd(
        Command::new("go")
            .args(["build", "-trimpath", &format!("-ldflags={ldflags}"), "-o"])
            .arg(out)
            .arg(package)
            .current_dir(root().join("xtask/controlplane").join(module))
            // The versions are the ones go.mod and go.sum pin, with the Go installed here.
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .env("GOTOOLCHAIN", "local"),
    )
    .with_context(|| format!("building {binary} (is Go installed?)"))
}

/// Linker flags: no symbol tables, and the version stamped as Kubernetes' own build stamps it (clients
/// such as kubectl and Helm read it from `/version`).
fn ldflags(binary: &str) -> String {
    let mut flags = "-s -w".to_owned();
    if binary.starts_with("kube-") {
        let numbers: Vec<&str> = KUBERNETES_VERSION.trim_start_matches('v').split('.').collect();
        let (major, minor) = (
            numbers.first().copied().unwrap_or("1"),
            numbers.get(1).copied().unwrap_or("0"),
        );
        for package in ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"] {
            for (var, value) in [
                ("gitVersion", KUBERNETES_VERSION),
                ("gitMajor", major),
                ("gitMinor", minor),
                ("gitTreeState", "clean"),
                ("buildDate", "1970-01-01T00:00:00Z"),
            ] {
                flags.push_str(&format!(" -X {package}.{var}={value}"));
            }
        }
    }
    flags
}

/// The real clients built from their Go modules: (module directory under `xtask/controlplane/`,
/// package, binary name, version, linker flags). The version is the one that go.mod pins.
const CLIENTS: [(&str, &str, &str, &str, &str); 2] = [
    (
        "clients",
        "helm.sh/helm/v4/cmd/helm",
        "helm",
        "v4.3.2",
        "-X helm.sh/helm/v4/internal/version.version=v4.3.2",
    ),
    (
        "k9s",
        "github.com/derailed/k9s",
        "k9s",
        "v0.50.16",
        "-X github.com/derailed/k9s/cmd.version=v0.50.16",
    ),
];

/// Returns the path of the `helm` CLI built from its Go module, building it first when it is not
/// cached yet (`$HOME/.cache/bulkhead/clients/helm-<version>/helm`).
pub(crate) fn ensure_helm() -> Result<PathBuf> {
    ensure_client(0)
}

/// The same for k9s (`cargo xtask controlplane k9s`; the e2e run does not need it).
pub(crate) fn ensure_k9s() -> Result<PathBuf> {
    ensure_client(1)
}

fn ensure_client(which: usize) -> Result<PathBuf> {
    let (module, package, binary, version, version_flags) = CLIENTS[which];
    let dir = bin_dir()
        .parent()
        .map(|p| p.with_file_name("clients"))
        .unwrap_or_else(|| PathBuf::from("clients"))
        .join(format!("{binary}-{version}"));
    let path = dir.join(binary);
    if path.is_file() {
        return Ok(path);
    }
    println!(
        "building {binary} {version} from its Go module into {}",
        dir.display()
    );
    let started = Instant::now();
    std::fs::create_dir_all(&dir)?;
    let partial = dir.join(format!("{binary}.partial"));
    go_build(
        module,
        package,
        binary,
        &format!("-s -w {version_flags}"),
        &partial,
    )?;
    std::fs::rename(&partial, &path)?;
    println!("built {binary} in {:.0} s", started.elapsed().as_secs_f64());
    Ok(path)
}

/// `cargo xtask controlplane [build|up|k9s]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        None | Some("build") => {
            let dir = ensure_built()?;
            println!("control plane binaries: {}", dir.display());
            println!("helm: {}", ensure_helm()?.display());
            Ok(())
        }
        Some("up") => {
            let dir = ensure_built()?;
            let plane = ControlPlane::start_with(&dir, &[]).context("starting the control plane")?;
            let kubeconfig = target_dir().join("controlplane.kubeconfig");
            std::fs::copy(plane.kubeconfig(), &kubeconfig)?;
            println!(
                "a real control plane (Kubernetes {KUBERNETES_VERSION}) serves at {}; no nodes.\n  export KUBECONFIG={}\nCtrl-C stops it.",
                plane.url(),
                kubeconfig.display()
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Some("k9s") => {
            println!("k9s: {}", ensure_k9s()?.display());
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown controlplane command `{other}` (try: build, up, k9s)"),
    }
}
