//! `bulkhead run`: connect, start the shared cache and the enabled roles, serve the admin endpoints, and
//! shut everything down on SIGTERM or SIGINT.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bulkhead_api::Tenant;
use bulkhead_cache::Cache;
use bulkhead_controller::{ControllerConfig, LeaseSettings};
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::admin::{self, AdminState, RoleState};
use crate::cli::{ClusterArgs, ControllerArgs, Role, RunArgs, WebhookTlsMode};
use crate::metrics::Metrics;
use bulkhead_controller::webhook_tls::WebhookTls;
use bulkhead_policy::webhooks::Endpoint;
use bulkhead_webhook::CertSource;

/// How long roles get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs until a shutdown signal; returns an error (one line, naming what failed) if start-up fails.
pub async fn run(args: RunArgs) -> Result<()> {
    let roles: BTreeSet<Role> = args.roles.iter().copied().collect();
    if roles.is_empty() {
        bail!("--roles names no role");
    }
    let mut config = load_config(&args.cluster).await?;
    config.connect_timeout = Some(args.cluster.connect_timeout);
    let server = config.cluster_url.to_string();
    let default_namespace = config.default_namespace.clone();
    let kube_config = config.clone();
    let metrics = Arc::new(Metrics::new().context("cannot register metrics")?);
    let counted = metrics.clone();
    let client = kube::client::ClientBuilder::try_from(config)
        .context("cannot build a Kubernetes client")?
        .with_layer(&tower::util::MapRequestLayer::new(
            move |request: http::Request<kube::client::Body>| {
                counted.count_request(request.method(), request.uri());
                request
            },
        ))
        .build();
    check_cluster(&client, &server, args.cluster.connect_timeout).await?;

    // Bind before anything acts, so a taken port fails start-up instead of a half-started process.
    let listener = TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("cannot listen on --admin-addr {}", args.admin_addr))?;
    let admin_addr = listener.local_addr().unwrap_or(args.admin_addr);

    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.clone());
    let webhook_listener = if roles.contains(&Role::Webhook) {
        if args.webhook.webhook_tls == WebhookTlsMode::External && args.webhook.webhook_cert_dir.is_none() {
            bail!("--webhook-tls external needs --webhook-cert-dir");
        }
        let addr = args.webhook.webhook_addr;
        Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --webhook-addr {addr}"))?,
        )
    } else {
        None
    };
    let proxy_listener = if roles.contains(&Role::Proxy) {
        let addr = args.proxy.proxy_addr;
        Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --proxy-addr {addr}"))?,
        )
    } else {
        None
    };
    let webhook_tls = match args.webhook.webhook_tls {
        WebhookTlsMode::External => None,
        WebhookTlsMode::Managed => Some(WebhookTls {
            namespace: namespace.clone(),
            secret: args.webhook.webhook_secret.clone(),
            endpoint: match &args.webhook.webhook_url {
                Some(url) => Endpoint::Url(url.clone()),
                None => Endpoint::Service {
                    namespace: namespace.clone(),
                    name: args.webhook.webhook_service.clone(),
                    port: i32::from(args.webhook.webhook_service_port),
                },
            },
            names: args
                .webhook
                .certificate_names(&namespace)
                .map_err(|e| anyhow!(e))?,
            configuration_name: args.webhook.webhook_configuration.clone(),
        }),
    };

    let shutdown = CancellationToken::new();
    let admission = roles.contains(&Role::Webhook);
    let needs = bulkhead_cache::Needs {
        owned_objects: roles.contains(&Role::Controller),
        configuration: true,
        admission,
        proxy: roles.contains(&Role::Proxy),
        role_binding_reflector: roles.contains(&Role::Proxy) && args.proxy.proxy_role_binding_reflector,
        gateway_routes: if admission {
            gateway_routes(&client).await?
        } else {
            bulkhead_cache::GatewayRoutes::default()
        },
    };
    let cache = Cache::start(client.clone(), needs, shutdown.clone());
    if admission {
        cache.keep_discovering_gateway_routes(
            client.clone(),
            args.webhook.gateway_discovery_interval,
            shutdown.clone(),
        );
    }
    cache.set_default_replication_account(&args.controller.tenant_resource_service_account);
    let mut tasks = JoinSet::new();
    let mut role_states = Vec::new();
    let mut leading = None;
    let mut webhook_listener = webhook_listener;
    let mut proxy_listener = proxy_listener;
    for role in &roles {
        let (up_tx, up_rx) = watch::channel(false);
        role_states.push(RoleState {
            role: *role,
            up: up_rx,
        });
        match role {
            Role::Controller => {
                let (lead_tx, lead_rx) = watch::channel(false);
                leading = Some(lead_rx);
                let mut config = controller_config(
                    &args.controller,
                    &namespace,
                    webhook_tls.clone(),
                    kube_config.clone(),
                );
                config.webhook_configuration = args.webhook.webhook_configuration.clone();
                let controller_metrics = bulkhead_controller::ControllerMetrics::register(metrics.registry())
                    .context("cannot register the controller's metrics")?;
                let task = bulkhead_controller::run(
                    client.clone(),
                    cache.clone(),
                    config,
                    controller_metrics,
                    lead_tx,
                    up_tx,
                    shutdown.clone(),
                );
                tasks.spawn(task.instrument(info_span!("role", role = "controller")));
            }
            Role::Webhook => {
                let Some(listener) = webhook_listener.take() else {
                    bail!("the webhook listener is missing");
                };
                let settings = bulkhead_webhook::Settings {
                    listener,
                    own_identity: args.identity.clone(),
                    cert_source: match (&args.webhook.webhook_cert_dir, args.webhook.webhook_tls) {
                        (Some(dir), WebhookTlsMode::External) => CertSource::Dir(dir.clone()),
                        _ => CertSource::Secret {
                            namespace: namespace.clone(),
                            name: args.webhook.webhook_secret.clone(),
                        },
                    },
                    reload_every: Duration::from_secs(10),
                    // With a certificate the controller keeps, it must name this webhook's address.
                    expected_names: match args.webhook.webhook_tls {
                        WebhookTlsMode::Managed => args
                            .webhook
                            .certificate_names(&namespace)
                            .map_err(|e| anyhow!(e))?,
                        WebhookTlsMode::External => Vec::new(),
                    },
                };
                let webhook_metrics = bulkhead_webhook::AdmissionMetrics::register(metrics.registry())
                    .context("cannot register the webhook's metrics")?;
                let task = bulkhead_webhook::run(
                    client.clone(),
                    cache.clone(),
                    settings,
                    webhook_metrics,
                    up_tx,
                    shutdown.clone(),
                );
                tasks.spawn(task.instrument(info_span!("role", role = "webhook")));
            }
            Role::Proxy => {
                let Some(listener) = proxy_listener.take() else {
                    bail!("the proxy listener is missing");
                };
                let proxy_metrics = bulkhead_proxy::ProxyMetrics::register(metrics.registry())
                    .context("cannot register the proxy's metrics")?;
                let api = bulkhead_proxy::ApiServer::new(&kube_config, args.proxy.proxy_upstream_http2)
                    .context("cannot build the proxy's connection to the API server")?
                    .counting(proxy_metrics.upstream.clone());
                let settings = bulkhead_proxy::ProxySettings {
                    cert_dir: args.proxy.proxy_cert_dir.clone(),
                    hostnames: args.proxy.proxy_hostnames.clone(),
                    client_ca: args.proxy.proxy_client_ca.clone(),
                    token_ttl: args.proxy.proxy_token_ttl,
                    own_identity: args.identity.clone(),
                };
                let task = bulkhead_proxy::run(
                    cache.clone(),
                    api,
                    listener,
                    settings,
                    proxy_metrics,
                    up_tx,
                    shutdown.clone(),
                );
                tasks.spawn(task.instrument(info_span!("role", role = "proxy")));
            }
        }
    }

    let (api_tx, api_rx) = watch::channel(None);
    tasks.spawn(admin::probe_api_server(client.clone(), api_tx, shutdown.clone()));
    let state = AdminState {
        cache: cache.clone(),
        roles: Arc::new(role_states),
        leading,
        metrics,
        api_server: api_rx,
    };
    let admin = axum::serve(listener, admin::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tasks.spawn(async move {
        if let Err(error) = admin.await {
            error!(%error, "admin server failed");
        }
    });
    let synced = cache.clone();
    tokio::spawn(async move {
        synced.wait_synced().await;
        let counts: Vec<String> = synced
            .status()
            .iter()
            .map(|s| format!("{}={}", s.kind, s.objects))
            .collect();
        info!(objects = %counts.join(","), "cache synced");
    });
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    info!(server = %server, roles = %names.join(","), admin = %admin_addr, "bulkhead started");

    let signal = wait_for_signal().await?;
    info!(signal, "shutting down");
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("some tasks did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

/// The kubeconfig named on the command line; else in-cluster; else $KUBECONFIG or ~/.kube/config.
async fn load_config(args: &ClusterArgs) -> Result<Config> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    if let Some(path) = &args.kubeconfig {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| anyhow!("kubeconfig {} is not usable: {e}", path.display()));
    }
    if args.context.is_none()
        && let Ok(config) = Config::incluster()
    {
        return Ok(config);
    }
    Config::from_kubeconfig(&options).await.map_err(|e| {
        anyhow!("not running in a cluster, and no usable kubeconfig ($KUBECONFIG or ~/.kube/config): {e}")
    })
}

/// Fails fast, with a sentence saying why, when the API server cannot be reached or lacks the CRDs.
async fn check_cluster(client: &Client, server: &str, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Err(_) => bail!("cannot reach the Kubernetes API server at {server}: no answer within {timeout:?}"),
        Ok(Err(e)) => bail!(
            "cannot reach the Kubernetes API server at {server}: {}",
            one_line(&e)
        ),
        Ok(Ok(_)) => {}
    }
    let tenants: Api<Tenant> = Api::all(client.clone());
    match tenants.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => bail!(
            "the Tenant CRD (tenants.bulkhead.dev) is not installed on {server}: run `bulkhead crds | kubectl apply -f -`"
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            bail!(
                "not allowed to list tenants.bulkhead.dev on {server}: {}",
                status.message
            )
        }
        Err(e) => bail!("cannot list tenants on {server}: {}", one_line(&e)),
    }
}

fn controller_config(
    args: &ControllerArgs,
    default_namespace: &str,
    webhook_tls: Option<WebhookTls>,
    kube_config: kube::Config,
) -> ControllerConfig {
    let lease = args.leader_elect.then(|| LeaseSettings {
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_owned()),
        name: args.lease_name.clone(),
        identity: args.lease_identity.clone().unwrap_or_else(default_identity),
        lease_duration: args.lease_duration,
        retry_period: args.lease_retry_period,
    });
    ControllerConfig {
        lease,
        webhook_tls,
        replication: bulkhead_controller::replication::ReplicationSettings {
            default_service_account: args.tenant_resource_service_account.clone(),
            kube_config: Some(kube_config),
        },
        webhook_configuration: String::new(),
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "bulkhead".to_owned());
    format!("{host}_{}", std::process::id())
}

fn one_line(error: &dyn std::fmt::Display) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn wait_for_signal() -> Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        _ = terminate.recv() => Ok("SIGTERM"),
        result = tokio::signal::ctrl_c() => result.map(|()| "SIGINT").context("cannot listen for SIGINT"),
    }
}

/// The Gateway API route kinds the cluster serves, whose hostnames the webhook must see for collisions:
/// asked a few times, since taking a served kind as absent would leave its names out.
async fn gateway_routes(client: &Client) -> Result<bulkhead_cache::GatewayRoutes> {
    let mut last = None;
    for attempt in 0..5u32 {
        match bulkhead_cache::served_gateway_routes(client).await {
            Ok(routes) => {
                info!(
                    http = routes.http,
                    grpc = routes.grpc,
                    tls = routes.tls,
                    gateway_classes = routes.gateway_classes,
                    device_classes = routes.device_classes,
                    "Gateway API routes and classes, and DRA device classes, served"
                );
                return Ok(routes);
            }
            Err(error) => {
                warn!(%error, attempt, "cannot tell which Gateway API routes are served; asking again");
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
        }
    }
    Err(anyhow!(
        "cannot tell which Gateway API routes the API server serves: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}
