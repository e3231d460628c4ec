//! The command line. Every flag can also be set from the environment variable named in its help.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Multi-tenancy for shared Kubernetes clusters.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Logging settings (apply to every command).
    #[command(flatten)]
    pub logging: LoggingArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Bulkhead's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller, webhook and proxy roles (any subset) against a cluster.
    Run(Box<RunArgs>),
    /// Print Bulkhead's CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
    /// Evaluate manifests offline with the webhook's rules: Tenants, the BulkheadConfiguration,
    /// namespaces labelled with a tenant and class objects are the cluster; every other object is
    /// checked as if created, in order. Exit 0 when all are allowed (or as each object's
    /// `check.bulkhead.dev/expect` annotation says), 1 otherwise, 2 on unreadable input.
    Check(CheckArgs),
    /// Convert Capsule manifests (Tenant, TenantResource, GlobalTenantResource, ProxySetting,
    /// CapsuleConfiguration) to Bulkhead's, keeping comments and order; the result goes to standard
    /// output, what a reader should know to standard error. Exits 1 when a converted document would be
    /// refused by Bulkhead's CRDs or its kind has no Bulkhead equivalent yet.
    Convert(ConvertArgs),
    /// Print a kubeconfig for a tenant user to reach the cluster through Bulkhead's proxy.
    Kubeconfig(KubeconfigArgs),
    /// Print the version.
    Version,
}

/// Flags of `bulkhead kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The proxy's URL, e.g. `https://tenants.example.com:9001`.
    #[arg(long)]
    pub server: String,
    /// The tenant (names the cluster, context and user entries).
    #[arg(long)]
    pub tenant: String,
    /// The context's default namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The CA (PEM file) the proxy's certificate chains to, embedded in the kubeconfig. Without it
    /// the system's trust roots are used.
    #[arg(long)]
    pub certificate_authority: Option<PathBuf>,
    /// The user authenticates with this command (an exec credential plugin such as
    /// `kubelogin get-token`): the command, then its arguments (a leading `--` is ignored). No key
    /// material is written.
    #[arg(long = "exec-command", num_args = 1.., value_name = "COMMAND", allow_hyphen_values = true, conflicts_with = "token_file")]
    pub exec_command: Vec<String>,
    /// The user authenticates with the bearer token in this file (referenced, not copied).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Flags of `bulkhead convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// More files or directories, as kubectl spells it.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
}

/// Flags of `bulkhead check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files or directories (searched recursively for .yaml, .yml and .json).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// More files or directories, as kubectl spells it.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// The user objects are created as (an object's `check.bulkhead.dev/as` annotation wins).
    #[arg(long = "as", value_name = "USER")]
    pub user: Option<String>,
    /// The user's groups, repeatable (default: the configuration's userGroups).
    #[arg(long = "as-group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// After the report, print every object replication (GlobalTenantResources, TenantResources) and
    /// default namespaces would write, as YAML.
    #[arg(long)]
    pub show_rendered: bool,
}

/// Logging flags.
#[derive(Debug, Args)]
pub struct LoggingArgs {
    /// Log format.
    #[arg(long, env = "BULKHEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`) or tracing directives (`info,bulkhead_cache=debug`).
    #[arg(long, env = "BULKHEAD_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Flags of `bulkhead run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which roles this process runs, comma-separated.
    #[arg(
        long,
        env = "BULKHEAD_ROLES",
        value_enum,
        value_delimiter = ',',
        default_value = "controller,webhook,proxy"
    )]
    pub roles: Vec<Role>,
    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "BULKHEAD_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,
    /// How to reach the cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Bulkhead's own namespace (its Lease, its certificate Secret). Default: the pod's namespace, else
    /// the kubeconfig context's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Bulkhead's own user name, always treated as an administrator (in a cluster:
    /// `system:serviceaccount:<namespace>:<service account>`).
    #[arg(long, env = "BULKHEAD_IDENTITY", default_value = "")]
    pub identity: String,
    /// Controller role.
    #[command(flatten, next_help_heading = "Controller role")]
    pub controller: ControllerArgs,
    /// Webhook role.
    #[command(flatten, next_help_heading = "Webhook role")]
    pub webhook: WebhookArgs,
    /// Proxy role.
    #[command(flatten, next_help_heading = "Proxy role")]
    pub proxy: ProxyArgs,
}

/// Flags of the proxy role.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address the proxy's HTTPS server listens on.
    #[arg(long, env = "BULKHEAD_PROXY_ADDR", default_value = "0.0.0.0:9001")]
    pub proxy_addr: SocketAddr,
    /// A directory with the serving certificate (`tls.crt`, `tls.key`), e.g. a mounted
    /// cert-manager Secret. Without one the proxy serves a self-signed certificate for
    /// `--proxy-hostname`s, made at start-up.
    #[arg(long, env = "BULKHEAD_PROXY_CERT_DIR")]
    pub proxy_cert_dir: Option<PathBuf>,
    /// Names the self-signed certificate is made for (repeatable, or comma-separated).
    #[arg(
        long = "proxy-hostname",
        env = "BULKHEAD_PROXY_HOSTNAMES",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1"
    )]
    pub proxy_hostnames: Vec<String>,
    /// The CA (PEM) client certificates must chain to; the user is the certificate's CN and the
    /// groups its O entries. Without it, only bearer tokens are accepted.
    #[arg(long, env = "BULKHEAD_PROXY_CLIENT_CA")]
    pub proxy_client_ca: Option<PathBuf>,
    /// How long a TokenReview answer (accepted or refused) is reused for the same token.
    #[arg(long, env = "BULKHEAD_PROXY_TOKEN_TTL", default_value = "10s", value_parser = parse_duration)]
    pub proxy_token_ttl: Duration,
    /// Offer HTTP/2 to the API server for ordinary requests (watches, followed logs and upgrades
    /// always use HTTP/1.1 connections of their own). Off by default: on loopback HTTP/1.1 measured
    /// lower latency and higher throughput (docs/benchmarks.md).
    #[arg(long, env = "BULKHEAD_PROXY_UPSTREAM_HTTP2", default_value_t = false, action = ArgAction::Set)]
    pub proxy_upstream_http2: bool,
    /// The RoleBinding reflector (Capsule proxy's `--enable-reflector`): a caller's namespace list
    /// through the proxy also shows the namespaces where a RoleBinding names it (its user, a group or
    /// its ServiceAccount), tenant user or not. Watches every RoleBinding's subjects (an index only).
    #[arg(long, env = "BULKHEAD_PROXY_ROLE_BINDING_REFLECTOR", default_value_t = false, action = ArgAction::Set)]
    pub proxy_role_binding_reflector: bool,
}

/// Where the webhook's serving certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WebhookTlsMode {
    /// The controller role keeps a self-signed CA and certificate in a Secret and registers the webhook
    /// configurations with that CA; the webhook role serves the Secret's certificate.
    Managed,
    /// Certificates come from elsewhere (cert-manager): the webhook serves `--webhook-cert-dir`, and the
    /// webhook configurations are installed by the chart.
    External,
}

/// Flags of the webhook role (and of the controller's TLS manager, which serves it).
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address the webhook's HTTPS server listens on.
    #[arg(long, env = "BULKHEAD_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// How often the webhook asks the API server which Gateway API route kinds it serves: routes
    /// installed after Bulkhead started count for hostname collisions from then on.
    #[arg(long, env = "BULKHEAD_GATEWAY_DISCOVERY_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub gateway_discovery_interval: Duration,
    /// Register the webhooks at this URL (`https://HOST:PORT`) instead of the in-cluster Service: for a
    /// webhook running outside the cluster (development, end-to-end tests).
    #[arg(long, env = "BULKHEAD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The Service in front of the webhook (in Bulkhead's namespace).
    #[arg(long, env = "BULKHEAD_WEBHOOK_SERVICE", default_value = "bulkhead-webhook")]
    pub webhook_service: String,
    /// The Service's port.
    #[arg(long, env = "BULKHEAD_WEBHOOK_SERVICE_PORT", default_value_t = 443)]
    pub webhook_service_port: u16,
    /// The name of the Mutating- and ValidatingWebhookConfiguration the controller registers.
    #[arg(long, env = "BULKHEAD_WEBHOOK_CONFIGURATION", default_value = "bulkhead")]
    pub webhook_configuration: String,
    /// Who provides the serving certificate.
    #[arg(long, env = "BULKHEAD_WEBHOOK_TLS", value_enum, default_value_t = WebhookTlsMode::Managed)]
    pub webhook_tls: WebhookTlsMode,
    /// The Secret (in Bulkhead's namespace) the managed certificate lives in.
    #[arg(long, env = "BULKHEAD_WEBHOOK_SECRET", default_value = "bulkhead-webhook-tls")]
    pub webhook_secret: String,
    /// Directory with `tls.crt` and `tls.key`, for `--webhook-tls external`. Reloaded when it changes.
    #[arg(long, env = "BULKHEAD_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
}

impl WebhookArgs {
    /// The names the serving certificate must cover.
    pub fn certificate_names(&self, namespace: &str) -> Result<Vec<String>, String> {
        match &self.webhook_url {
            Some(url) => Ok(vec![url_host(url)?]),
            None => Ok(vec![
                format!("{}.{namespace}.svc", self.webhook_service),
                format!("{}.{namespace}.svc.cluster.local", self.webhook_service),
            ]),
        }
    }
}

/// The host of an `https://HOST[:PORT][/...]` URL (IPv6 hosts in brackets come out without them).
pub fn url_host(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("--webhook-url `{url}` must start with https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    if host.is_empty() {
        return Err(format!("--webhook-url `{url}` names no host"));
    }
    Ok(host.to_owned())
}

/// A role of the bulkhead process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Role {
    /// Reconciles Tenants into their namespaces (one active replica, by Lease).
    Controller,
    /// Admission webhook.
    Webhook,
    /// Tenant-aware reverse proxy for the API server.
    Proxy,
}

impl Role {
    /// The role's name, as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Webhook => "webhook",
            Role::Proxy => "proxy",
        }
    }
}

/// Which cluster to talk to.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file. Without it: the in-cluster service account when running in a pod, else
    /// $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "BULKHEAD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the file's current context).
    #[arg(long, env = "BULKHEAD_CONTEXT")]
    pub context: Option<String>,
    /// How long to wait for the API server at start-up before giving up.
    #[arg(long, env = "BULKHEAD_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// Flags of the controller role.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Take a Lease so that only one controller replica acts. Turn off only for a single replica.
    #[arg(long, env = "BULKHEAD_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the namespace of the kubeconfig context or of the pod).
    #[arg(long, env = "BULKHEAD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, env = "BULKHEAD_LEASE_NAME", default_value = "bulkhead-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: the pod name, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// How long the Lease stays valid without renewal.
    #[arg(long, env = "BULKHEAD_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews the Lease and the others retry.
    #[arg(long, env = "BULKHEAD_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,
    /// The ServiceAccount (in its own namespace) a TenantResource writes as when it names none.
    #[arg(
        long,
        env = "BULKHEAD_TENANT_RESOURCE_SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub tenant_resource_service_account: String,
}

/// Parses `500ms`, `15s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 15s, 2m or 1h"))?;
    let millis = match unit {
        "ms" => value,
        "" | "s" => value.saturating_mul(1_000),
        "m" => value.saturating_mul(60_000),
        "h" => value.saturating_mul(3_600_000),
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Ok(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn roles_default_to_all_three_and_take_a_comma_separated_subset() {
        let cli = Cli::try_parse_from(["bulkhead", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.roles, [Role::Controller, Role::Webhook, Role::Proxy]);
        let cli = Cli::try_parse_from([
            "bulkhead",
            "run",
            "--roles",
            "proxy,webhook",
            "--leader-elect=false",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.roles, [Role::Proxy, Role::Webhook]);
        assert!(!run.controller.leader_elect);
        let err = Cli::try_parse_from(["bulkhead", "run", "--roles", "scheduler"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid value 'scheduler'"), "{err}");
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("1d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn webhook_urls_give_the_certificate_name() {
        assert_eq!(url_host("https://127.0.0.1:9443"), Ok("127.0.0.1".into()));
        assert_eq!(
            url_host("https://dev.example.com/x"),
            Ok("dev.example.com".into())
        );
        assert_eq!(url_host("https://[::1]:9443"), Ok("::1".into()));
        assert!(
            url_host("http://x")
                .unwrap_err()
                .contains("must start with https://")
        );
        let cli = Cli::try_parse_from(["bulkhead", "run"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            run.webhook.certificate_names("bulkhead-system").unwrap(),
            [
                "bulkhead-webhook.bulkhead-system.svc",
                "bulkhead-webhook.bulkhead-system.svc.cluster.local"
            ]
        );
    }
}
