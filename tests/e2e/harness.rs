//! The e2e harness: a cluster (testkit or real), kubectl and kube-rs clients acting as given users,
//! the bulkhead binary as a child process, cleanup of what a test creates, and "eventually" assertions.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead_testkit::TestServer;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The environment variable naming a real cluster's kubeconfig.
pub const KUBECONFIG_ENV: &str = "BULKHEAD_E2E_KUBECONFIG";

/// The environment variable naming the address at which the cluster's API server reaches webhooks
/// running on this machine (default `127.0.0.1`; for kind, the host's address on the kind network).
pub const WEBHOOK_HOST_ENV: &str = "BULKHEAD_E2E_WEBHOOK_HOST";

/// The Gateway API release whose route CRDs the tests install.
pub const GATEWAY_API_VERSION: &str = "v1.6.0";

/// The Argo CD release whose AppProject CRD the tests install (the newest whose module Go 1.26 reads).
pub const ARGO_CD_VERSION: &str = "v3.5.8";

/// A cluster to test against.
pub struct Cluster {
    _server: Option<TestServer>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// A client with the administrator's credentials.
    pub admin: Client,
    cleanup: Arc<Mutex<Vec<Vec<String>>>>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cluster {
    /// The real cluster named by `BULKHEAD_E2E_KUBECONFIG`, or a fresh testkit. Bulkhead's CRDs are
    /// installed (applied) either way.
    pub async fn start() -> Cluster {
        Self::start_at(std::env::var_os(KUBECONFIG_ENV).map(PathBuf::from)).await
    }

    /// The real cluster this kubeconfig names (a control plane a test started for itself, say), with
    /// Bulkhead's CRDs installed.
    pub async fn at(kubeconfig: PathBuf) -> Cluster {
        Self::start_at(Some(kubeconfig)).await
    }

    async fn start_at(kubeconfig: Option<PathBuf>) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temporary directory");
        let (server, kubeconfig) = match kubeconfig {
            Some(path) => (None, path),
            None => {
                let server = TestServer::start().await.expect("testkit starts");
                let path = server
                    .write_kubeconfig(dir.path(), bulkhead_testkit::ADMIN_TOKEN)
                    .expect("kubeconfig");
                (Some(server), path)
            }
        };
        let admin = client_for(&kubeconfig, None, &[]).await;
        let cluster = Cluster {
            _server: server,
            dir,
            kubeconfig,
            admin,
            cleanup: Arc::default(),
        };
        cluster.install_crds(true);
        cluster
    }

    /// Applies Bulkhead's CRDs, with their CEL validation rules or (`rules: false`) without them, as
    /// a release older than the rules had them: for objects that got in before an upgrade.
    pub fn install_crds(&self, rules: bool) {
        let crds = self.dir.path().join("crds.yaml");
        let mut all = String::new();
        for mut crd in bulkhead_api::crds::all() {
            if !rules {
                for version in &mut crd.spec.versions {
                    if let Some(schema) = version
                        .schema
                        .as_mut()
                        .and_then(|s| s.open_api_v3_schema.as_mut())
                    {
                        bulkhead_api::crds::visit_mut(schema, &mut |s| s.x_kubernetes_validations = None);
                    }
                }
            }
            all.push_str("---\n");
            all.push_str(&bulkhead_api::crds::to_yaml(&crd).unwrap());
        }
        std::fs::write(&crds, all).unwrap();
        let out = self.kubectl().run(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "applying the CRDs failed:\n{stderr}");
        // A real API server warns about what it ignores in a schema (an unknown format, say).
        assert!(
            !stderr.contains("Warning"),
            "the API server warned about the CRDs:\n{stderr}"
        );
        self.kubectl().ok(&[
            "wait",
            "--for=condition=Established",
            "crd/tenants.bulkhead.dev",
            "--timeout=60s",
        ]);
    }

    /// Installs the Gateway API route CRDs (HTTPRoute, GRPCRoute, TLSRoute of the standard channel of
    /// [`GATEWAY_API_VERSION`], from the `sigs.k8s.io/gateway-api` Go module, which ships them) unless
    /// the cluster already has them: a cluster's own Gateway API is never replaced. They stay: other
    /// tests' Bulkhead processes find them served, as on a cluster that has Gateway API.
    pub fn install_gateway_routes(&self) {
        self.install_gateway_api(&["httproutes", "grpcroutes", "tlsroutes"]);
    }

    /// Installs the Gateway and GatewayClass CRDs of [`GATEWAY_API_VERSION`] (standard channel, from the
    /// `sigs.k8s.io/gateway-api` Go module) unless the cluster has them already.
    pub fn install_gateways(&self) {
        self.install_gateway_api(&["gatewayclasses", "gateways"]);
    }

    /// Installs Gateway API CRDs of the standard channel by plural name.
    fn install_gateway_api(&self, kinds: &[&str]) {
        let files: Vec<String> = kinds
            .iter()
            .map(|k| format!("config/crd/standard/gateway.networking.k8s.io_{k}.yaml"))
            .collect();
        let names: Vec<String> = kinds
            .iter()
            .map(|k| format!("{k}.gateway.networking.k8s.io"))
            .collect();
        self.install_crds_from_module(
            &format!("sigs.k8s.io/gateway-api@{GATEWAY_API_VERSION}"),
            &files,
            &names,
        );
    }

    /// Installs Argo CD's AppProject CRD (of [`ARGO_CD_VERSION`], from the `github.com/argoproj/argo-cd/v3`
    /// Go module, which ships it) unless the cluster has it already.
    pub fn install_argo_cd_projects(&self) {
        self.install_crds_from_module(
            &format!("github.com/argoproj/argo-cd/v3@{ARGO_CD_VERSION}"),
            &["manifests/crds/appproject-crd.yaml".to_owned()],
            &["appprojects.argoproj.io".to_owned()],
        );
    }

    /// Applies CRD files of a Go module (downloaded to Go's module cache) and waits until they are
    /// served; nothing is done when the cluster has the first CRD named already (a cluster's own is
    /// never replaced). They stay, as on a cluster that has that project installed.
    fn install_crds_from_module(&self, module: &str, files: &[String], names: &[String]) {
        let present = self.kubectl().run(&["get", "crd", &names[0], "-o", "name"]);
        if present.status.success() {
            return;
        }
        let out = Command::new("go")
            .args(["mod", "download", "-json", module])
            .env("GOFLAGS", "-mod=mod")
            .current_dir(self.dir.path())
            .output()
            .expect("go runs (CRDs of other projects come from Go's module cache)");
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let dir = info["Dir"].as_str().unwrap_or_else(|| {
            panic!(
                "go mod download {module} failed: {info} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut args = vec!["apply".to_owned(), "--server-side".to_owned()];
        for file in files {
            args.push("-f".to_owned());
            args.push(PathBuf::from(dir).join(file).to_string_lossy().into_owned());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kubectl().ok(&args);
        for name in names {
            self.kubectl().ok(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
                "--timeout=60s",
            ]);
        }
    }

    /// Whether the cluster already has a BulkheadConfiguration `default`: it is cluster-wide, so a test
    /// that needs its own leaves such a cluster alone (and says so).
    pub fn has_configuration(&self) -> bool {
        let existing = self
            .kubectl()
            .run(&["get", "bulkheadconfiguration", "default", "-o", "name"]);
        if existing.status.success() {
            eprintln!("skipped: this cluster already has a BulkheadConfiguration `default`");
        }
        existing.status.success()
    }

    /// Whether this is the in-memory testkit (some assertions need exclusive use of the cluster).
    pub fn is_testkit(&self) -> bool {
        self._server.is_some()
    }

    /// The testkit, when the cluster is one (for counts only it can give, such as writes served).
    pub fn testkit(&self) -> Option<&TestServer> {
        self._server.as_ref()
    }

    /// The administrator's kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The administrator's kubeconfig, current context only, with every file it names (CA, client
    /// certificate) embedded as data, as JSON: kubeconfigs name files as often as they embed them.
    pub fn flat_kubeconfig(&self) -> serde_json::Value {
        let view = self
            .kubectl()
            .ok(&["config", "view", "--raw", "--minify", "--flatten", "-o", "json"]);
        serde_json::from_str(&view).expect("kubectl config view prints JSON")
    }

    /// kubectl as the administrator.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.kubeconfig.clone(),
            user: None,
            groups: Vec::new(),
        }
    }

    /// kubectl as another user (impersonated by the administrator: works on any cluster).
    pub fn kubectl_as(&self, user: &str, groups: &[&str]) -> Kubectl {
        Kubectl {
            kubeconfig: self.kubeconfig.clone(),
            user: Some(user.to_owned()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    /// A kube-rs client acting as another user (impersonation).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Client {
        client_for(&self.kubeconfig, Some(user), groups).await
    }

    /// A name nobody else uses: `<prefix>-<pid>-<n>` (tests may share a real cluster).
    pub fn unique(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A scratch directory that lives as long as the cluster handle.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A bearer token for a service account (TokenRequest, as `kubectl create token` asks for it).
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.kubectl()
            .ok(&["create", "token", name, "-n", namespace, "--duration=1h"])
            .trim()
            .to_owned()
    }

    /// Deletes this object (kubectl arguments, e.g. `["tenant", "x"]`) when the cluster handle goes.
    pub fn clean_up(&self, what: &[&str]) {
        self.cleanup
            .lock()
            .unwrap()
            .push(what.iter().map(|s| (*s).to_owned()).collect());
    }

    /// Applies a manifest as the administrator and deletes it at the end of the test.
    pub fn apply(&self, manifest: &str) -> String {
        let path = self.dir.path().join(format!(
            "manifest-{}.yaml",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, manifest).unwrap();
        let out = self.kubectl().ok(&["apply", "-f", path.to_str().unwrap()]);
        self.cleanup
            .lock()
            .unwrap()
            .push(vec!["-f".into(), path.to_string_lossy().into_owned()]);
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self._server.is_some() {
            return; // the whole testkit goes away
        }
        for what in self.cleanup.lock().unwrap().iter().rev() {
            let mut args = vec![
                "delete".to_owned(),
                "--ignore-not-found".to_owned(),
                "--wait=false".to_owned(),
            ];
            args.extend(what.iter().cloned());
            let _ = Command::new("kubectl")
                .env("KUBECONFIG", &self.kubeconfig)
                .args(&args)
                .output();
        }
    }
}

pub async fn client_for(kubeconfig: &Path, user: Option<&str>, groups: &[&str]) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig reads");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    if let Some(user) = user {
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    Client::try_from(config).expect("client")
}

/// kubectl, as a real client.
pub struct Kubectl {
    kubeconfig: PathBuf,
    user: Option<String>,
    groups: Vec<String>,
}

impl Kubectl {
    /// kubectl with this kubeconfig, as whoever it names.
    pub fn at(kubeconfig: PathBuf) -> Kubectl {
        Kubectl {
            kubeconfig,
            user: None,
            groups: Vec::new(),
        }
    }

    /// Runs kubectl with these arguments.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, None)
    }

    /// Runs kubectl with these arguments and standard input.
    pub fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig).args(args);
        if let Some(user) = &self.user {
            cmd.arg(format!("--as={user}"));
            for group in &self.groups {
                cmd.arg(format!("--as-group={group}"));
            }
        }
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed");
        if let Some(input) = input {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns its standard output; fails the test (showing stderr) if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl until it succeeds (retrying while RBAC, the webhook or the API server are still
    /// being set up) and returns its standard output; fails the test with the last error after `timeout`.
    pub async fn ok_eventually(&self, timeout: Duration, args: &[&str]) -> String {
        eventually(timeout, || async {
            let out = self.run(args);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .await
    }

    /// Runs kubectl expecting failure; returns its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A free address for a webhook to listen on, and the URL the cluster's API server reaches it at
/// (`BULKHEAD_E2E_WEBHOOK_HOST`, default `127.0.0.1`): (`--webhook-addr`, `--webhook-url`).
pub fn webhook_endpoint() -> (String, String) {
    let host = std::env::var(WEBHOOK_HOST_ENV).unwrap_or_else(|_| "127.0.0.1".to_owned());
    let bind = if host == "127.0.0.1" {
        "127.0.0.1"
    } else {
        "0.0.0.0"
    };
    let port = free_port(bind);
    (format!("{bind}:{port}"), format!("https://{host}:{port}"))
}

/// A port free on `bind` for a Bulkhead to listen on, below Linux's ephemeral range (32768 and up):
/// a port the kernel hands out (bind to port 0) can be given to an outgoing connection between the
/// check and the listen, and a test holding a thousand connections makes that likely.
pub fn free_port(bind: &str) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = 20_000 + std::process::id() % 6_000;
    for _ in 0..12_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        let Ok(port) = u16::try_from(port) else { continue };
        if std::net::TcpListener::bind((bind, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// The bulkhead binary, running as a child process.
pub struct Bulkhead {
    child: Option<Child>,
    /// Where its admin server listens.
    pub admin: SocketAddr,
    /// Where its proxy listens (when it runs the proxy role).
    pub proxy: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The name of its webhook configurations, when the harness chose it.
    pub webhook_configuration: Option<String>,
    /// What to delete from a real cluster when it goes (its webhook configurations and Secret).
    leftovers: Vec<Vec<String>>,
    kubeconfig: PathBuf,
    /// The arguments of `bulkhead`, kept for a restart.
    args: Vec<String>,
}

impl Bulkhead {
    /// Starts `bulkhead run` against the cluster with extra arguments, and waits until it says where
    /// its admin server listens.
    ///
    /// Unless `extra` sets `--webhook-tls`, the webhook listens on a free port and is registered by URL
    /// under names of its own (configurations and Secret), so tests sharing a cluster do not collide;
    /// on a real cluster they are deleted when this handle goes.
    pub fn start(cluster: &Cluster, extra: &[&str]) -> Bulkhead {
        Bulkhead::start_with_chart(cluster, extra, &[])
    }

    /// As [`Bulkhead::start`]; on a real cluster the chart is rendered with these values too
    /// (`key=value`, e.g. `proxy.clusterScopedWrites=true`) before its RBAC is applied.
    ///
    /// On a real cluster Bulkhead never runs as the administrator: the harness renders the chart (Helm's
    /// own library), applies its ServiceAccounts, roles and bindings under a release of its own, and runs
    /// the binary with a token of the chart's ServiceAccount for the roles it runs (in split mode the
    /// proxy has its own), so what the chart lacks shows up as a failing test.
    pub fn start_with_chart(cluster: &Cluster, extra: &[&str], chart_values: &[&str]) -> Bulkhead {
        let mut webhook_args: Vec<String> = Vec::new();
        let mut leftovers = Vec::new();
        let mut webhook_name = None;
        if !extra.contains(&"--webhook-tls") {
            let (addr, url) = webhook_endpoint();
            let name = cluster.unique("e2e-webhook");
            webhook_name = Some(name.clone());
            webhook_args.extend([
                "--namespace".to_owned(),
                "default".to_owned(),
                "--webhook-addr".to_owned(),
                addr,
                "--webhook-url".to_owned(),
                url,
                "--webhook-configuration".to_owned(),
                name.clone(),
                "--webhook-secret".to_owned(),
                name.clone(),
            ]);
            if !cluster.is_testkit() {
                leftovers = vec![
                    vec!["mutatingwebhookconfiguration".to_owned(), name.clone()],
                    vec!["validatingwebhookconfiguration".to_owned(), name.clone()],
                    vec![
                        "validatingadmissionpolicybinding".to_owned(),
                        format!("{name}-namespace-ownership"),
                        format!("{name}-tenant-prevent-deletion"),
                    ],
                    vec![
                        "validatingadmissionpolicy".to_owned(),
                        format!("{name}-namespace-ownership"),
                        format!("{name}-tenant-prevent-deletion"),
                    ],
                    vec!["secret".to_owned(), "-n".to_owned(), "default".to_owned(), name],
                ];
            }
        }
        let proxy_port = free_port("127.0.0.1");
        let proxy: SocketAddr = format!("127.0.0.1:{proxy_port}").parse().unwrap();
        if !extra.contains(&"--proxy-addr") {
            webhook_args.extend(["--proxy-addr".to_owned(), proxy.to_string()]);
        }
        let mut bulkhead_kubeconfig = cluster.kubeconfig().to_owned();
        if !cluster.is_testkit() {
            let identity = ChartIdentity::install(cluster, extra, webhook_name.as_deref(), chart_values);
            webhook_args.extend(["--identity".to_owned(), identity.user.clone()]);
            bulkhead_kubeconfig = identity.kubeconfig;
            leftovers.extend(identity.objects);
        }
        let mut args: Vec<String> = vec![
            "run".into(),
            "--log-format".into(),
            "json".into(),
            "--admin-addr".into(),
            "127.0.0.1:0".into(),
            "--kubeconfig".into(),
            bulkhead_kubeconfig.to_string_lossy().into_owned(),
        ];
        args.extend(webhook_args);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut bulkhead = Bulkhead {
            child: None,
            admin: "127.0.0.1:1".parse().unwrap(),
            proxy,
            log: Arc::default(),
            webhook_configuration: webhook_name,
            leftovers,
            kubeconfig: cluster.kubeconfig().to_owned(),
            args,
        };
        bulkhead.spawn();
        bulkhead
    }

    /// Runs the process (again) with the arguments it was made with, and waits until it says where its
    /// admin server listens.
    fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bulkhead starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "bulkhead started"
                {
                    let _ = tx.send(v["admin"].as_str().unwrap_or_default().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => self.admin = addr.parse().expect("admin address"),
            Err(_) => panic!("bulkhead did not start:\n{}", self.log()),
        }
    }

    /// Kills the process with SIGKILL (no shutdown of any kind: the Lease is not released) and waits
    /// until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM (its shutdown: requests in flight finish), waits for the exit,
    /// then starts it again as it was (same ports, same names).
    pub fn terminate_and_restart(&mut self) -> ExitStatus {
        let status = self.terminate();
        self.spawn();
        status
    }

    /// Kills the process with SIGKILL (no shutdown of any kind), then starts it again as it was.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn();
    }

    /// A kubeconfig that reaches the cluster through this Bulkhead's proxy with `token`, made by
    /// `bulkhead kubeconfig` (the proxy's certificate is self-signed here, so it is not verified).
    pub fn proxy_kubeconfig(&self, dir: &Path, tenant: &str, token: &str) -> PathBuf {
        let token_file = dir.join(format!(
            "{tenant}-{}.token",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&token_file, token).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_bulkhead"))
            .args([
                "kubeconfig",
                "--server",
                &format!("https://{}", self.proxy),
                "--tenant",
                tenant,
            ])
            .arg("--token-file")
            .arg(&token_file)
            .output()
            .expect("bulkhead kubeconfig runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let path = token_file.with_extension("kubeconfig");
        std::fs::write(&path, &out.stdout).unwrap();
        let cluster = format!("bulkhead-{tenant}");
        Kubectl::at(path.clone()).ok(&[
            "config",
            "set-cluster",
            &cluster,
            "--insecure-skip-tls-verify=true",
        ]);
        path
    }

    /// A client that reaches the cluster through this Bulkhead's proxy as the ServiceAccount
    /// `namespace/name` (a fresh token, the kubeconfig [`Bulkhead::proxy_kubeconfig`] makes).
    pub async fn proxy_client(&self, cluster: &Cluster, namespace: &str, name: &str) -> Client {
        let token = cluster.service_account_token(namespace, name);
        client_for(&self.proxy_kubeconfig(cluster.dir(), "bench", &token), None, &[]).await
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// A GET on the admin server: status code and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(self.admin).expect("admin server answers");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(30), || async {
            let (code, body) = self.admin_get("/readyz");
            (code == 200)
                .then_some(())
                .ok_or(format!("/readyz {code}: {body}"))
        })
        .await;
    }

    /// The value of a metric sample, e.g. `bulkhead_cache_objects{kind="Tenant"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
    }

    /// The sum of every sample of `name` whose labels pass `keep` (given the text between the braces).
    pub fn metric_sum(&self, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let (labels, value) = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?,
                    None => ("", rest.strip_prefix(' ')?),
                };
                keep(labels).then(|| value.trim().parse::<f64>().ok())?
            })
            .sum()
    }

    /// Sends SIGTERM and waits for the exit (at most 15 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("bulkhead did not exit within 15 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bulkhead {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- bulkhead log ----\n{}\n----------------------", self.log());
        }
        for what in &self.leftovers {
            let _ = Command::new("kubectl")
                .env("KUBECONFIG", &self.kubeconfig)
                .args(["delete", "--ignore-not-found", "--wait=false"])
                .args(what)
                .output();
        }
    }
}

/// Bulkhead's identity on a real cluster: a ServiceAccount the chart creates, with the chart's RBAC.
struct ChartIdentity {
    /// `system:serviceaccount:<namespace>:<name>`.
    user: String,
    /// A kubeconfig with the cluster of the administrator's and a token of the ServiceAccount.
    kubeconfig: PathBuf,
    /// What to delete when the Bulkhead handle goes (kubectl arguments).
    objects: Vec<Vec<String>>,
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1))
        .copied()
}

/// The Python that has Helm's library (the virtualenv `cargo xtask test` makes beside the build output),
/// or `BULKHEAD_E2E_PYTHON`.
fn chart_python() -> PathBuf {
    if let Some(python) = std::env::var_os("BULKHEAD_E2E_PYTHON") {
        return PathBuf::from(python);
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_bulkhead"));
    bin.parent()
        .and_then(Path::parent)
        .map(|target| target.join("xtask-venv/bin/python"))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

impl ChartIdentity {
    /// Renders the chart for the roles in `extra` (`--roles`; all three: combined mode, else split mode),
    /// applies its RBAC as the administrator, and makes a kubeconfig for the ServiceAccount that runs
    /// those roles.
    fn install(
        cluster: &Cluster,
        extra: &[&str],
        webhook_name: Option<&str>,
        chart_values: &[&str],
    ) -> ChartIdentity {
        let roles = flag_value(extra, "--roles").unwrap_or("controller,webhook,proxy");
        let roles: BTreeSet<&str> = roles.split(',').map(str::trim).collect();
        let namespace = flag_value(extra, "--lease-namespace").unwrap_or("default");
        let lease = flag_value(extra, "--lease-name").unwrap_or("bulkhead-controller");
        let release = cluster.unique("e2e-chart");
        let combined = roles.len() == 3;
        let proxy_only = roles.len() == 1 && roles.contains("proxy");
        let mut values = vec![
            format!("mode={}", if combined { "combined" } else { "split" }),
            format!("leaderElection.leaseName={lease}"),
            // The configuration is the cluster's own (or none): the chart's copy is not the point here.
            "configuration.create=false".to_owned(),
        ];
        if let Some(name) = webhook_name {
            values.push(format!("webhook.configurationName={name}"));
            values.push(format!("webhook.secretName={name}"));
        }
        if flag_value(extra, "--webhook-tls") == Some("external") {
            values.push("webhook.tls=certManager".to_owned());
        }
        values.extend(chart_values.iter().map(|v| (*v).to_owned()));
        let out = Command::new(chart_python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../charts/bulkhead/tests/render.py"
            ))
            .args([&release, namespace])
            .args(&values)
            .args([
                "--kinds",
                "ServiceAccount,ClusterRole,ClusterRoleBinding,Role,RoleBinding",
            ])
            .output()
            .expect("python runs (run the suite through `cargo xtask test`, or set BULKHEAD_E2E_PYTHON)");
        assert!(
            out.status.success(),
            "rendering the chart failed (is Helm's library installed? `cargo xtask test` makes its virtualenv):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("render.py prints JSON");
        let mut objects = Vec::new();
        let mut accounts = Vec::new();
        for item in list["items"].as_array().into_iter().flatten() {
            let kind = item["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
            let name = item["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            if kind == "serviceaccount" {
                accounts.push(name.clone());
            }
            let mut what = vec![kind.clone(), name];
            if let Some(ns) = item["metadata"]["namespace"].as_str() {
                what.extend(["-n".to_owned(), ns.to_owned()]);
            }
            objects.push(what);
        }
        let path = cluster.dir().join(format!("{release}-rbac.json"));
        std::fs::write(&path, &out.stdout).unwrap();
        cluster.kubectl().ok(&["apply", "-f", path.to_str().unwrap()]);
        // In split mode the proxy runs as a ServiceAccount of its own (`<name>-proxy`).
        let account = accounts
            .iter()
            .find(|a| a.ends_with("-proxy") == proxy_only)
            .or(accounts.first())
            .cloned()
            .expect("the chart renders a ServiceAccount");
        let token = cluster.service_account_token(namespace, &account);
        let view = cluster.flat_kubeconfig();
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": view["clusters"][0]["cluster"].clone()}],
            "users": [{"name": account.clone(), "user": {"token": token}}],
            "contexts": [{"name": "chart", "context": {"cluster": "cluster", "user": account.clone()}}],
            "current-context": "chart",
        });
        let kubeconfig_path = cluster.dir().join(format!("{release}.kubeconfig"));
        std::fs::write(&kubeconfig_path, kubeconfig.to_string()).unwrap();
        ChartIdentity {
            user: format!("system:serviceaccount:{namespace}:{account}"),
            kubeconfig: kubeconfig_path,
            objects,
        }
    }
}

/// The notes of the Events with this reason about the cluster-scoped object `name` (a Tenant), which
/// Kubernetes keeps in `default`.
pub async fn event_notes(cluster: &Cluster, name: &str, reason: &str) -> Result<Vec<String>, String> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cluster.admin.clone(), "default");
    let list = events
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .map(|e| e.note.unwrap_or_default())
        .collect())
}

/// Retries `check` until it returns `Ok`, failing the test with the last error after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => panic!("not true within {timeout:?}: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
