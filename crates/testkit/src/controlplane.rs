//! The real Kubernetes control plane on loopback, as controller-runtime's envtest runs it: etcd,
//! kube-apiserver and kube-controller-manager, built from their Go modules by `cargo xtask
//! controlplane` (the build modules are `xtask/controlplane/*/go.mod`). A cluster without nodes: no
//! kubelet, so no pod ever runs, but everything the API server itself does is real.
//!
//! The API server gets a throwaway CA and serving certificate, a service account signing key, RBAC
//! authorization, client certificates for its administrator and for test users, and the admission
//! plugins a managed cluster (AKS, EKS, GKE) has on; PodNodeSelector stays off, as those clusters keep
//! it. The controller manager runs the controllers the API server's own behaviour depends on:
//! namespace deletion, garbage collection, quota status, service accounts.
//!
//! Everything started here is a child process that dies with its parent (`setpriv --pdeathsig`, where
//! util-linux has it), and the working directory is removed when [`ControlPlane`] is dropped; a run that
//! was killed leaves a directory the next start removes.

use std::io::{Error, ErrorKind, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType,
};

/// The `k8s.io/kubernetes` release the control plane is built from (`xtask/controlplane/kubernetes`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The `go.etcd.io/etcd/server/v3` release etcd is built from (`xtask/controlplane/etcd`).
pub const ETCD_VERSION: &str = "v3.6.16";

/// The binaries a control plane needs.
pub const BINARIES: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// The admission plugins the API server runs with: those a managed cluster has on. PodNodeSelector is
/// not among them (AKS, EKS and GKE do not let users enable it).
pub const ADMISSION_PLUGINS: &str = "NamespaceLifecycle,ServiceAccount,LimitRanger,ResourceQuota,Priority,\
DefaultStorageClass,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy";

/// The controllers kube-controller-manager runs: what the API server's own behaviour needs without nodes.
pub const CONTROLLERS: &str = "namespace,garbagecollector,resourcequota,serviceaccount,\
clusterrole-aggregation,root-ca-cert-publisher,pvc-protection,pv-protection";

/// The group the administrator's client certificate names.
pub const ADMIN_GROUP: &str = "system:masters";
/// The administrator's user name.
pub const ADMIN_USER: &str = "bulkhead-e2e-admin";

/// Where built binaries are cached: `$BULKHEAD_CONTROLPLANE_BIN`, or
/// `$HOME/.cache/bulkhead/controlplane/kubernetes-<v>-etcd-<v>`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BULKHEAD_CONTROLPLANE_BIN") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache/bulkhead/controlplane")
        .join(format!("kubernetes-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"))
}

/// Whether every binary is in `dir`.
pub fn binaries_present(dir: &Path) -> bool {
    BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// One component's process and where its output goes.
struct Component {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
    args: Vec<String>,
}

/// A running control plane. Dropping it stops every process and removes its files.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    components: Vec<Component>,
    url: String,
    port: u16,
    ca: CertifiedIssuer<'static, KeyPair>,
    kubeconfig: PathBuf,
}

static STARTS: AtomicU64 = AtomicU64::new(0);

fn other(what: impl std::fmt::Display) -> Error {
    Error::other(what.to_string())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager from the binaries in [`bin_dir`] and
    /// waits until the API server is ready (`/readyz`) and has its default namespace.
    pub fn start() -> std::io::Result<ControlPlane> {
        ControlPlane::start_with(&bin_dir(), &[])
    }

    /// As [`ControlPlane::start`], with binaries from `bin` and extra kube-apiserver flags.
    pub fn start_with(bin: &Path, apiserver_flags: &[String]) -> std::io::Result<ControlPlane> {
        if !binaries_present(bin) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "the control plane binaries are not in {} (build them: cargo xtask controlplane)",
                    bin.display()
                ),
            ));
        }
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!(
            "bulkhead-controlplane-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("etcd"))?;
        let certs = Certs::write(&dir)?;
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &url,
                &dir.join("ca.crt"),
                &dir.join("admin.crt"),
                &dir.join("admin.key"),
            ),
        )?;
        let mut plane = ControlPlane {
            dir: dir.clone(),
            bin: bin.to_owned(),
            components: Vec::new(),
            url,
            port,
            ca: certs.ca,
            kubeconfig,
        };
        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
        plane.spawn(
            "etcd",
            vec![
                "--name=default".into(),
                format!("--data-dir={}", d("etcd")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                // Throwaway data: durability buys nothing and costs seconds per test on shared disks.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        let mut apiserver = vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The `kubernetes` Service's endpoints may not be a loopback address; nothing here uses them.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={port}"),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            format!("--enable-admission-plugins={ADMISSION_PLUGINS}"),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            format!("--cert-dir={}", d("apiserver-certs")),
        ];
        apiserver.extend(apiserver_flags.iter().cloned());
        plane.spawn("kube-apiserver", apiserver)?;
        plane.wait_ready(Duration::from_secs(90))?;
        plane.spawn(
            "kube-controller-manager",
            vec![
                format!("--kubeconfig={}", plane.kubeconfig.display()),
                format!("--authentication-kubeconfig={}", plane.kubeconfig.display()),
                format!("--authorization-kubeconfig={}", plane.kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                format!("--controllers={CONTROLLERS}"),
                format!("--root-ca-file={}", d("ca.crt")),
                "--use-service-account-credentials=false".into(),
                "--leader-elect=false".into(),
                // Quota usage and garbage collection as fast as a test wants them.
                "--resource-quota-sync-period=10s".into(),
                "--concurrent-gc-syncs=5".into(),
            ],
        )?;
        Ok(plane)
    }

    fn spawn(&mut self, name: &'static str, args: Vec<String>) -> std::io::Result<()> {
        let log = self.dir.join(format!("{name}.log"));
        let mut component = Component {
            name,
            child: None,
            log,
            args,
        };
        component.child = Some(start_process(
            &self.bin.join(name),
            &component.args,
            &component.log,
        )?);
        self.components.push(component);
        Ok(())
    }

    /// Waits until the API server answers `/readyz` and serves the `default` namespace.
    fn wait_ready(&mut self, timeout: Duration) -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for c in &mut self.components {
                if let Some(child) = c.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    return Err(other(format!(
                        "{} exited ({status}) while the control plane started:\n{}",
                        c.name,
                        tail(&c.log, 4000)
                    )));
                }
            }
            let out = self.kubectl(&["get", "--raw=/readyz"])?;
            let last = if out.status.success() {
                let ns = self.kubectl(&["get", "namespace", "default", "-o", "name"])?;
                if ns.status.success() {
                    return Ok(());
                }
                String::from_utf8_lossy(&ns.stderr).into_owned()
            } else {
                String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
            };
            if Instant::now() > deadline {
                return Err(other(format!(
                    "the API server was not ready within {timeout:?}: {last}\n{}",
                    self.logs(3000)
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kubectl(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .args(["--request-timeout=5s"])
            .stdin(Stdio::null())
            .output()
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The administrator's kubeconfig (`system:masters`, by client certificate; the CA and the
    /// credentials are files beside it, as many real kubeconfigs have them).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster CA, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The working directory (certificates, etcd data, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a kubeconfig for `user` in `groups`, authenticated by a client certificate this
    /// cluster's CA signs, and returns its path.
    pub fn user_kubeconfig(&self, user: &str, groups: &[&str]) -> std::io::Result<PathBuf> {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let (cert, key) = (
            self.dir.join(format!("user-{n}.crt")),
            self.dir.join(format!("user-{n}.key")),
        );
        let pair = client_cert(&self.ca, user, groups).map_err(other)?;
        std::fs::write(&cert, pair.0)?;
        std::fs::write(&key, pair.1)?;
        let path = self.dir.join(format!("user-{n}.kubeconfig"));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.url, &self.dir.join("ca.crt"), &cert, &key),
        )?;
        Ok(path)
    }

    /// Stops the API server (etcd keeps its data): for tests of what happens while it is away.
    pub fn stop_apiserver(&mut self) -> std::io::Result<()> {
        if let Some(c) = self.components.iter_mut().find(|c| c.name == "kube-apiserver")
            && let Some(mut child) = c.child.take()
        {
            stop_process(&mut child);
        }
        Ok(())
    }

    /// Starts the API server again, on the same port with the same data, and waits until it is ready.
    pub fn restart_apiserver(&mut self) -> std::io::Result<()> {
        self.stop_apiserver()?;
        let bin = self.bin.clone();
        if let Some(c) = self.components.iter_mut().find(|c| c.name == "kube-apiserver") {
            c.child = Some(start_process(&bin.join(c.name), &c.args, &c.log)?);
        }
        self.wait_ready(Duration::from_secs(90))
    }

    /// The port the API server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last `bytes` of every component's log, for a failure message.
    pub fn logs(&self, bytes: u64) -> String {
        self.components
            .iter()
            .map(|c| format!("---- {} ----\n{}", c.name, tail(&c.log, bytes)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The controller manager first, etcd last: nothing logs errors about what went before it.
        for c in self.components.iter_mut().rev() {
            if let Some(mut child) = c.child.take() {
                stop_process(&mut child);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a binary with its output in `log`, so that it dies with this process where `setpriv` can
/// arrange it (a test run that is killed leaves no control plane behind).
fn start_process(binary: &Path, args: &[String], log: &Path) -> std::io::Result<Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut cmd = dying_with_parent(binary);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| other(format!("starting {}: {e}", binary.display())))
}

/// A command for `program` that is killed when the thread that starts it goes (`setpriv --pdeathsig
/// KILL`, where util-linux has it; a plain command elsewhere).
pub fn dying_with_parent(program: &Path) -> Command {
    if setpriv_available() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn setpriv_available() -> bool {
    Command::new("setpriv")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM, then SIGKILL after five seconds.
fn stop_process(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes the directories of control planes whose process no longer exists.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("bulkhead-controlplane-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut text = Vec::new();
    let _ = file.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn kubeconfig_yaml(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: controlplane
  cluster:
    server: {server}
    certificate-authority: {}
users:
- name: user
  user:
    client-certificate: {}
    client-key: {}
contexts:
- name: controlplane
  context:
    cluster: controlplane
    user: user
current-context: controlplane
",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// The certificates and keys a control plane needs, written into its directory.
struct Certs {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Certs {
    fn write(dir: &Path) -> std::io::Result<Certs> {
        let ca = crate::tls::certificate_authority("bulkhead-controlplane-ca").map_err(other)?;
        std::fs::write(dir.join("ca.crt"), ca.pem())?;
        let (cert, key) = serving_cert(&ca).map_err(other)?;
        std::fs::write(dir.join("apiserver.crt"), cert)?;
        std::fs::write(dir.join("apiserver.key"), key)?;
        let (cert, key) = client_cert(&ca, ADMIN_USER, &[ADMIN_GROUP]).map_err(other)?;
        std::fs::write(dir.join("admin.crt"), cert)?;
        std::fs::write(dir.join("admin.key"), key)?;
        let sa = KeyPair::generate().map_err(other)?;
        std::fs::write(dir.join("sa.key"), sa.serialize_pem())?;
        std::fs::write(dir.join("sa.pub"), sa.public_key_pem())?;
        Ok(Certs { ca })
    }
}

fn serving_cert(ca: &CertifiedIssuer<'static, KeyPair>) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    for ip in ["127.0.0.1", "10.0.0.1"] {
        if let Ok(addr) = ip.parse() {
            params.subject_alt_names.push(SanType::IpAddress(addr));
        }
    }
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A client certificate: the API server reads the user from the CN and the group from O.
fn client_cert(
    ca: &CertifiedIssuer<'static, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    if let Some(group) = groups.first() {
        params.distinguished_name.push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The versions the library looks for are the ones the build modules pin.
    #[test]
    fn versions_match_the_build_modules() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../xtask/controlplane");
        let kubernetes = std::fs::read_to_string(root.join("kubernetes/go.mod")).unwrap_or_default();
        assert!(
            kubernetes.contains(&format!("k8s.io/kubernetes {KUBERNETES_VERSION}")),
            "xtask/controlplane/kubernetes/go.mod does not pin k8s.io/kubernetes {KUBERNETES_VERSION}"
        );
        let staging = KUBERNETES_VERSION.replacen("v1.", "v0.", 1);
        for line in kubernetes.lines().filter(|l| l.contains(" => ")) {
            assert!(
                line.ends_with(&staging),
                "staging module not pinned to {staging}: {line}"
            );
        }
        let etcd = std::fs::read_to_string(root.join("etcd/go.mod")).unwrap_or_default();
        assert!(
            etcd.contains(&format!("go.etcd.io/etcd/server/v3 {ETCD_VERSION}")),
            "xtask/controlplane/etcd/go.mod does not pin go.etcd.io/etcd/server/v3 {ETCD_VERSION}"
        );
    }
}
