//! An in-memory Kubernetes API server for tests, good enough for kube-rs watchers and kubectl.
//!
//! It serves discovery, CRUD, list and watch (resourceVersions, bookmarks, label and field selectors
//! with the watch cache's ADDED/DELETED transitions), merge / JSON / strategic patches and server-side
//! apply, the status subresource, finalizers, namespace termination, owner-reference garbage
//! collection, CRDs (structural schemas, strict field validation, pruning, defaults, printer columns,
//! OpenAPI v3 for `kubectl explain`), bearer-token authentication, impersonation, RBAC,
//! TokenReview / SubjectAccessReview, and admission webhooks.
//!
//! It is a test double: where it knowingly differs from Kubernetes, the module says so. Where it
//! differs unknowingly, it is wrong and should be fixed.

pub mod admission;
pub mod auth;
pub mod controlplane;
pub mod handlers;
pub mod openapi;
pub mod patch;
mod proto_schema;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod selector;
pub mod server;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::auth::{Tokens, UserInfo};
use crate::registry::Registry;
use crate::server::Shared;
use crate::store::Store;

/// The token of the built-in cluster administrator (`system:masters`).
pub const ADMIN_TOKEN: &str = "testkit-admin-token";
/// The user name of the built-in cluster administrator.
pub const ADMIN_USER: &str = "testkit-admin";

/// A running test server. It stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    ca_pem: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    /// The server's runtime, to serve again after [`TestServer::pause`].
    runtime: tokio::runtime::Handle,
    config: Arc<rustls::ServerConfig>,
    /// Ends the current listener and its connections (a child of `shutdown`).
    serving: parking_lot::Mutex<CancellationToken>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 with a random port, with the default RBAC objects and the
    /// administrator token [`ADMIN_TOKEN`].
    pub async fn start() -> std::io::Result<TestServer> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts a server on a given address. The server runs on a runtime of its own, on its own
    /// thread, so a test that blocks (waiting for kubectl, say) cannot starve it.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<TestServer> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("testkit".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Self::serve(addr).await {
                        Ok((server, done)) => {
                            let stop = server.shutdown.clone();
                            let _ = tx.send(Ok(server));
                            stop.cancelled().await;
                            let _ = done.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        rx.await
            .map_err(|_| std::io::Error::other("the testkit thread stopped"))?
    }

    async fn serve(addr: SocketAddr) -> std::io::Result<(TestServer, tokio::task::JoinHandle<()>)> {
        let mut tokens = Tokens::default();
        tokens.insert(
            ADMIN_TOKEN.to_owned(),
            UserInfo::new(ADMIN_USER, &["system:masters"]),
        );
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            registry: RwLock::new(Registry::default()),
            tokens: RwLock::new(tokens),
            admission: Admission::default(),
            requests: Mutex::new(Default::default()),
        });
        {
            let registry = shared.registry.read();
            let mut store = shared.store.lock();
            for object in rbac::default_rbac() {
                let kind = object["kind"].as_str().unwrap_or_default();
                let plural = if kind == "ClusterRole" {
                    "clusterroles"
                } else {
                    "clusterrolebindings"
                };
                if let Some(rt) = registry.find("rbac.authorization.k8s.io", "v1", plural) {
                    store
                        .create(&rt, "", object)
                        .map_err(|e| std::io::Error::other(e.message))?;
                }
            }
            let ns = registry
                .find("", "v1", "namespaces")
                .ok_or_else(|| std::io::Error::other("no namespaces type"))?;
            for name in ["default", "kube-system", "kube-public"] {
                store
                    .create(
                        &ns,
                        "",
                        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                    )
                    .map_err(|e| std::io::Error::other(e.message))?;
            }
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cert = tls::ServingCert::generate(&["localhost", "127.0.0.1"]).map_err(std::io::Error::other)?;
        let config = cert.server_config().map_err(std::io::Error::other)?;
        let shutdown = CancellationToken::new();
        let serving = shutdown.child_token();
        let done = tokio::spawn(tls::serve_tls(
            listener,
            config.clone(),
            Self::app(&shared),
            serving.clone(),
        ));
        Ok((
            TestServer {
                addr,
                ca_pem: cert.ca_pem,
                shared,
                shutdown,
                runtime: tokio::runtime::Handle::current(),
                config,
                serving: parking_lot::Mutex::new(serving),
            },
            done,
        ))
    }

    fn app(shared: &Arc<Shared>) -> axum::Router {
        axum::Router::new()
            .fallback(server::handle)
            .with_state(shared.clone())
    }

    /// An outage, as when the API server process stops (etcd keeping the data): the port is closed
    /// and every open connection, watches included, ends. [`TestServer::resume`] serves again.
    pub fn pause(&self) {
        self.serving.lock().cancel();
    }

    /// Serves again on the same address, with the same objects and certificate, after
    /// [`TestServer::pause`] (as the API server does when it restarts).
    pub fn resume(&self) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            // The paused listener closes on the server's own runtime; the port frees a moment later.
            match std::net::TcpListener::bind(self.addr) {
                Ok(listener) => break listener,
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "the port is not free yet");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        listener.set_nonblocking(true)?;
        let serving = self.shutdown.child_token();
        *self.serving.lock() = serving.clone();
        let _runtime = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        self.runtime.spawn(tls::serve_tls(
            listener,
            self.config.clone(),
            Self::app(&self.shared),
            serving,
        ));
        Ok(())
    }

    /// The server's base URL, e.g. `https://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that signed the server's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a bearer token for a user with groups (and `system:authenticated`).
    pub fn add_token(&self, token: &str, user: &str, groups: &[&str]) {
        self.shared
            .tokens
            .write()
            .insert(token.to_owned(), UserInfo::new(user, groups));
    }

    /// Revokes a token: requests with it get 401, and TokenReview says it is not authenticated.
    pub fn revoke_token(&self, token: &str) {
        self.shared.tokens.write().revoke(token);
    }

    /// A kubeconfig (YAML) for the server with a bearer token.
    pub fn kubeconfig(&self, token: &str) -> String {
        kubeconfig_yaml(&self.url(), &self.ca_pem, token)
    }

    /// Writes a kubeconfig for a token into `dir`, returning its path.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str) -> std::io::Result<PathBuf> {
        let path = dir.join(format!(
            "kubeconfig-{}",
            token.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        std::fs::write(&path, self.kubeconfig(token))?;
        Ok(path)
    }

    /// How many writes (create, update, delete) the server has served, by verb and resource.
    pub fn writes(&self) -> std::collections::BTreeMap<(String, String), u64> {
        self.shared.store.lock().writes.clone()
    }

    /// The total number of writes served.
    pub fn write_count(&self) -> u64 {
        self.shared.store.lock().writes.values().sum()
    }

    /// Requests served, by verb (get, list, watch, create, update, patch, delete, ...).
    pub fn request_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared.requests.lock().clone()
    }

    /// The audit events of requests an admission webhook annotated, as an audit log at level Metadata
    /// holds them (see [`admission::Admission::audit_events`]).
    pub fn audit_events(&self) -> Vec<Value> {
        self.shared.admission.audit_events()
    }

    /// Reads an object straight from the store (no authorization), for assertions.
    pub fn object(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let gr = registry::GroupResource {
            group: group.into(),
            resource: resource.into(),
        };
        self.shared
            .store
            .lock()
            .get(&gr, namespace, name)
            .map(|o| (*o).clone())
    }

    /// Creates (or replaces) a CRD as the administrator would, and serves it at once.
    pub fn install_crd(
        &self,
        crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    ) -> Result<(), String> {
        let object = serde_json::to_value(crd).map_err(|e| e.to_string())?;
        let registry = self.shared.registry.read().clone();
        let rt = registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .ok_or("no CRD type")?;
        let violations = bulkhead_api::crds::structural_violations(crd);
        if !violations.is_empty() {
            return Err(violations.join("; "));
        }
        {
            let mut store = self.shared.store.lock();
            let name = crd.metadata.name.clone().unwrap_or_default();
            if store.get(&rt.group_resource(), "", &name).is_some() {
                store
                    .update(&registry, &rt, "", &name, object, None)
                    .map_err(|e| e.message)?;
            } else {
                store.create(&rt, "", object).map_err(|e| e.message)?;
            }
        }
        self.shared.registry.write().register_crd(crd);
        Ok(())
    }

    /// Installs every Bulkhead CRD.
    pub fn install_bulkhead_crds(&self) -> Result<(), String> {
        bulkhead_api::crds::all()
            .iter()
            .try_for_each(|crd| self.install_crd(crd))
    }

    /// Stops the server.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A kubeconfig for a server URL, its CA (PEM) and a bearer token.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testkit\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: testkit\n  context:\n    cluster: testkit\n    user: user\n    namespace: default\ncurrent-context: testkit\n"
    )
}
