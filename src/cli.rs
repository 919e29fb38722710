//! Every flag in one place. Each also reads a `PORTCULLIS_...` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--grpc-max-concurrent-per-connection`: Envoy multiplexes the checks of one worker
/// thread on one connection; each check is bounded by the decision deadline.
pub const DEFAULT_GRPC_MAX_CONCURRENT_PER_CONNECTION: u32 = 1024;

#[derive(Parser, Debug)]
#[command(
    name = "portcullis",
    version,
    about = "External authorizer for Envoy and Istio, configured the Aidbox way"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[arg(long, global = true, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Cli {
    /// `serve --otlp-endpoint`: the one command that exports spans.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        match &self.command {
            Command::Serve(args) => args.otlp_endpoint.as_deref(),
            _ => None,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve ext_authz (gRPC and HTTP), health and metrics.
    Serve(Box<ServeArgs>),
    /// Check configuration files; exit 1 and name file, resource and field for each error.
    Validate(ConfigArgs),
    /// Decide one request from the command line and print every step, like Aidbox's __debug=policy.
    Explain(ExplainArgs),
    /// Run policy unit tests (YAML cases of a request, claims or a token, and the
    /// expected status and policy) against the configuration, offline; exit 1 when one fails.
    Test(TestArgs),
    /// Print the CustomResourceDefinitions that deploy/ and charts/ carry.
    Crds,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// A configuration file, or a directory read for every *.yaml, *.yml and *.json below it.
    #[arg(
        long = "config",
        env = "PORTCULLIS_CONFIG",
        value_delimiter = ',',
        required = true
    )]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub tenancy: TenancyArgs,
}

/// Which namespace's resources apply to every request (docs/tenancy.md), and what each
/// namespace's configuration may cost.
#[derive(Args, Debug, Clone, Default)]
pub struct TenancyArgs {
    /// Bytes of compiled regex programs that the AccessPolicies of one namespace may take
    /// (the root has a budget of its own); a policy past it is refused, naming its pattern
    #[arg(long, env = "PORTCULLIS_MAX_REGEX_BYTES", default_value_t = crate::policy::DEFAULT_MAX_REGEX_BYTES, value_parser = positive_bytes)]
    pub max_regex_bytes: usize,
    /// The root namespace: its resources apply to every request, another namespace's only
    /// to requests of that namespace. With --kube the default is the namespace portcullis
    /// runs in (POD_NAMESPACE, or the service account's). From files, by default every
    /// resource is root; given this, a Kubernetes-form resource's metadata.namespace
    /// scopes it as in a cluster
    #[arg(long, env = "PORTCULLIS_ROOT_NAMESPACE", value_parser = namespace_name)]
    pub root_namespace: Option<String>,
}

impl TenancyArgs {
    /// The root namespace for --kube: the flag, else the pod's own namespace. Outside a pod
    /// without the flag there is none to assume.
    pub fn kube_root(&self) -> anyhow::Result<String> {
        if let Some(ns) = &self.root_namespace {
            return Ok(ns.clone());
        }
        let from_pod = std::env::var("POD_NAMESPACE").ok().or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        });
        match from_pod.map(|ns| ns.trim().to_string()) {
            Some(ns) if namespace_name(&ns).is_ok() => Ok(ns),
            _ => anyhow::bail!(
                "--root-namespace is needed outside a pod: name the namespace whose resources \
                 apply to every request (docs/tenancy.md)"
            ),
        }
    }
}

/// A byte count of at least 1.
fn positive_bytes(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a positive number of bytes")),
    }
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn namespace_name(s: &str) -> Result<String, String> {
    if crate::resources::is_namespace_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a namespace name (lower-case letters, digits and `-`, at most 63)"
        ))
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Configuration files or directories; reloaded on change.
    #[arg(long = "config", env = "PORTCULLIS_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    /// With --kube: the namespace of the Lease that picks the one replica writing status
    /// (default: the client's namespace, which in a pod is the pod's own).
    #[arg(long, env = "PORTCULLIS_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// With --kube: the name of that Lease. Releases that share a namespace need one each
    /// (the chart names it after the release); RBAC grants get and update on it by name.
    #[arg(
        long,
        env = "PORTCULLIS_LEASE_NAME",
        default_value = crate::source::cluster::lease::DEFAULT_NAME
    )]
    pub lease_name: String,
    /// ext_authz v3 and grpc.health.v1.
    #[arg(long, env = "PORTCULLIS_GRPC_ADDR", default_value = "0.0.0.0:9191")]
    pub grpc_addr: SocketAddr,
    /// /healthz, /readyz, /metrics and HTTP ext_authz under /ext-authz.
    #[arg(long, env = "PORTCULLIS_HTTP_ADDR", default_value = "0.0.0.0:8181")]
    pub http_addr: SocketAddr,
    /// The admin listener: the operator API (gRPC portcullis.admin.v1, Explain) and the
    /// explain page (http://ADDR/). Off unless set; keep it private.
    #[arg(long, env = "PORTCULLIS_ADMIN_ADDR", requires = "admin_token_file")]
    pub admin_addr: Option<SocketAddr>,
    /// A file holding the bearer token that callers of the admin listener must present
    /// (a mounted Secret, for example). Required with --admin-addr.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// With --kube: the validating admission webhook (`POST /validate`, AdmissionReview
    /// v1) over HTTPS, which refuses an object of the four kinds that portcullis would
    /// refuse before it is stored. Off unless set; needs --tls-cert-file and --tls-key-file.
    #[arg(
        long,
        env = "PORTCULLIS_WEBHOOK_ADDR",
        requires_all = ["kube", "tls_cert_file", "tls_key_file"]
    )]
    pub webhook_addr: Option<SocketAddr>,
    /// The webhook's certificate chain (PEM, the serving certificate first); read again
    /// when the file changes.
    #[arg(long, env = "PORTCULLIS_TLS_CERT_FILE", requires = "webhook_addr")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of the webhook's certificate (PEM); read again when the file changes.
    #[arg(long, env = "PORTCULLIS_TLS_KEY_FILE", requires = "webhook_addr")]
    pub tls_key_file: Option<PathBuf>,
    /// Over the HTTP flavour of ext_authz, take `remote-addr` from the last
    /// `X-Forwarded-For` entry and `scheme` from `X-Forwarded-Proto`. Set it only when Envoy
    /// is the edge with `use_remote_address: true` (the shipped configurations), which
    /// appends the real peer and overwrites the scheme; without it a client's copies are
    /// ignored: `remote-addr` is absent and `scheme` is `http`.
    #[arg(long, env = "PORTCULLIS_HTTP_TRUST_FORWARDED")]
    pub http_trust_forwarded: bool,
    /// Create a User on first sight of a valid token (Aidbox's BOX_SECURITY_INTROSPECTION_CREATE_USER).
    #[arg(long, env = "PORTCULLIS_CREATE_USERS")]
    pub create_users: bool,
    /// Where created Users are written as manifests in file mode (`<name>.yaml`), and read
    /// back at start-up and on change; required with --create-users.
    #[arg(long, env = "PORTCULLIS_USERS_DIR")]
    pub users_dir: Option<PathBuf>,
    /// Whether a User without identifiers is found by a token whose `box_user` or `sub`
    /// names it (Aidbox's way). That trusts every issuer that lets a caller choose those
    /// claims; `false` finds Users only through their identifiers.
    #[arg(long, env = "PORTCULLIS_CLAIM_USERS_BY_NAME", default_value_t = true, action = clap::ArgAction::Set)]
    pub claim_users_by_name: bool,
    #[command(flatten)]
    pub users: UsersArgs,
    /// With --create-users: Users created per second per IdentityProvider, once
    /// --user-create-burst is spent. Past it the request goes on without a User
    /// (metric `user_events{event="create_rate_limited"}`).
    #[arg(long, env = "PORTCULLIS_USER_CREATE_RATE", default_value_t = crate::users::DEFAULT_CREATE_RATE, value_parser = positive_rate)]
    pub user_create_rate: f64,
    /// With --create-users: Users an IdentityProvider may create at once after a quiet spell.
    #[arg(long, env = "PORTCULLIS_USER_CREATE_BURST", default_value_t = crate::users::DEFAULT_CREATE_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub user_create_burst: u32,
    /// With --create-users: no User is created in a namespace that holds this many (file
    /// mode has no namespaces: the cap applies to all Users). Metric
    /// `user_events{event="create_capped_namespace"}`.
    #[arg(long, env = "PORTCULLIS_MAX_USERS_PER_NAMESPACE", default_value_t = crate::users::DEFAULT_MAX_USERS_PER_NAMESPACE)]
    pub max_users_per_namespace: usize,
    /// With --create-users: no User is created once this many exist in all. Metric
    /// `user_events{event="create_capped_total"}`.
    #[arg(long, env = "PORTCULLIS_MAX_USERS", default_value_t = crate::users::DEFAULT_MAX_USERS)]
    pub max_users: usize,
    /// Tokens longer than this are refused unread.
    #[arg(long, env = "PORTCULLIS_MAX_TOKEN_BYTES", default_value_t = crate::token::DEFAULT_MAX_TOKEN_BYTES)]
    pub max_token_bytes: usize,
    /// Introspection calls in flight at once, all introspectors together (a flood of
    /// distinct garbage opaque tokens costs at most this many outbound calls at a time).
    /// Past it the request is answered 503 `introspection_unavailable` at once (metric
    /// `token_events{event="introspection_shed"}`).
    #[arg(long, env = "PORTCULLIS_MAX_CONCURRENT_INTROSPECTIONS", default_value_t = crate::token::DEFAULT_MAX_CONCURRENT_INTROSPECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_introspections: u32,
    /// Checks in flight at once on one gRPC connection (also the HTTP/2
    /// `MAX_CONCURRENT_STREAMS` announced). Past it a check is refused at once with
    /// `RESOURCE_EXHAUSTED` (Envoy denies it, or retries per its own policy), never queued.
    #[arg(long, env = "PORTCULLIS_GRPC_MAX_CONCURRENT_PER_CONNECTION", default_value_t = DEFAULT_GRPC_MAX_CONCURRENT_PER_CONNECTION, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_per_connection: u32,
    /// Bound on each call to an identity provider (JWKS, introspection, userinfo), in
    /// milliseconds. Keep it below Envoy's ext_authz timeout, so a slow provider is a
    /// clear 503 from portcullis rather than Envoy giving up.
    #[arg(long, env = "PORTCULLIS_IDP_TIMEOUT_MS", default_value_t = 800)]
    pub idp_timeout_ms: u64,
    /// How long past its `cache_ttl` a JWKS key set keeps verifying tokens while its
    /// endpoint fails, in seconds; then JWTs of that issuer are refused with 503 until a
    /// fetch succeeds (metric `token_events{event="jwks_stale_expired"}`).
    #[arg(long, env = "PORTCULLIS_JWKS_MAX_STALE_SECS", default_value_t = crate::token::DEFAULT_JWKS_MAX_STALE.as_secs())]
    pub jwks_max_stale_secs: u64,
    /// The longest one decision may take, in milliseconds; then it is a 503 denial. Envoy's
    /// `grpc-timeout` shortens it per request. Keep it below Envoy's ext_authz timeout.
    #[arg(long, env = "PORTCULLIS_DECISION_TIMEOUT_MS", default_value_t = 900)]
    pub decision_timeout_ms: u64,
    /// On SIGTERM, how long to keep answering while reporting not ready, in milliseconds.
    #[arg(long, env = "PORTCULLIS_DRAIN_MS", default_value_t = 5000)]
    pub drain_ms: u64,
    /// Call identity providers (JWKS, discovery, introspection, userinfo) only on these
    /// hosts: `idp.example.com`, or `*.example.com` for its subdomains. Repeatable, or
    /// comma-separated; none given allows any host the configuration names
    #[arg(
        long = "outbound-allow-host",
        value_name = "HOST",
        env = "PORTCULLIS_OUTBOUND_ALLOW_HOST",
        value_delimiter = ','
    )]
    pub outbound_allow_hosts: Vec<String>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Log one allow decision in N (denials are always logged); 0, the default, logs no
    /// allows (`portcullis_decisions_total` still counts every one).
    #[arg(
        long,
        env = "PORTCULLIS_DECISION_LOG_ALLOW_SAMPLE",
        default_value_t = 0
    )]
    pub decision_log_allow_sample: u64,
    /// Answer allow to every request, for a first rollout: each decision is still made,
    /// and a denial is counted under its real outcome and reason
    /// (`portcullis_decisions_total`, and `portcullis_shadow_allowed_total`) and logged
    /// with `shadow=true`, then answered allow without identity headers.
    #[arg(long, env = "PORTCULLIS_SHADOW")]
    pub shadow: bool,
    /// Count each AccessPolicy evaluated on the request path:
    /// `portcullis_policy_evaluations_total{policy, result, dry_run}`, one series per policy
    /// and result. Off by default.
    #[arg(long, env = "PORTCULLIS_POLICY_METRICS")]
    pub policy_metrics: bool,
    /// Export one span per decision over OTLP/gRPC to this collector
    /// (`http://otel-collector:4317`); the span continues the caller's W3C `traceparent`.
    /// Off unless set. `OTEL_BSP_*` variables tune the batching
    #[arg(long, env = "PORTCULLIS_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Test files: YAML with a `tests:` list (docs/policies.md, "Policy tests").
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// As for `serve`: whether a User without identifiers is found by name.
    #[arg(long, env = "PORTCULLIS_CLAIM_USERS_BY_NAME", default_value_t = true, action = clap::ArgAction::Set)]
    pub claim_users_by_name: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

/// What outbound HTTPS (JWKS, discovery, introspection, userinfo) trusts.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// A PEM bundle of certificate authorities that identity providers' HTTPS is also
    /// trusted from (a cluster's private CA), besides the system's roots. Repeatable, or
    /// comma-separated; a file that cannot be read or holds no certificate stops start-up
    #[arg(
        long = "ca-file",
        value_name = "PEM",
        env = "PORTCULLIS_CA_FILE",
        value_delimiter = ','
    )]
    pub ca_files: Vec<PathBuf>,
}

impl TrustArgs {
    /// The client for every call to an identity provider, each bounded by `timeout`.
    pub fn idp_client(
        &self,
        timeout: std::time::Duration,
    ) -> anyhow::Result<crate::outbound::IdpClient> {
        let roots = crate::outbound::ExtraRoots::from_files(&self.ca_files)?;
        crate::outbound::IdpClient::trusting(timeout, &roots)
    }
}

/// Where the Users come from with --kube (docs/users.md, "Users on demand").
#[derive(Args, Debug, Clone)]
pub struct UsersArgs {
    /// With --kube: `watch` keeps every User in memory through a watch; `on-demand`, for
    /// clusters with millions of Users, reads a User (by name, or by the label
    /// `portcullis.dev/identifier`) when a request needs it, behind a bounded, expiring
    /// cache. A read waits at most the decision deadline; past it the request goes on
    /// without a User.
    #[arg(long = "users", env = "PORTCULLIS_USERS", value_enum, default_value_t = UsersMode::Watch)]
    pub mode: UsersMode,
    /// With --users on-demand: answers kept in the cache at once (a User, or that there is
    /// none), each about 300 bytes; least used first out.
    #[arg(long = "users-cache-entries", env = "PORTCULLIS_USERS_CACHE_ENTRIES", default_value_t = crate::users::DEFAULT_CACHE_ENTRIES, value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_entries: u64,
    /// With --users on-demand: how long a User read is used, in seconds; an edit or a
    /// deletion of a User is seen within it.
    #[arg(long = "users-cache-ttl-secs", env = "PORTCULLIS_USERS_CACHE_TTL_SECS", default_value_t = crate::users::DEFAULT_CACHE_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_ttl_secs: u64,
    /// With --users on-demand: how long "no such User" is believed, in seconds; a User
    /// written elsewhere (kubectl) is found by its identifier label within it (by a name no
    /// User had, from the next count). Creation asks again before it creates.
    #[arg(long = "users-cache-negative-ttl-secs", env = "PORTCULLIS_USERS_CACHE_NEGATIVE_TTL_SECS", default_value_t = crate::users::DEFAULT_CACHE_NEGATIVE_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_negative_ttl_secs: u64,
    /// With --users on-demand: seconds between two counts of the Users (a metadata-only
    /// list) for --max-users and --max-users-per-namespace, and for their names: a request
    /// reads a User by name only if the last count saw that name.
    #[arg(long = "users-count-interval-secs", env = "PORTCULLIS_USERS_COUNT_INTERVAL_SECS", default_value_t = crate::source::cluster::users::DEFAULT_COUNT_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub count_interval_secs: u64,
}

/// `--users`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsersMode {
    Watch,
    OnDemand,
}

impl UsersArgs {
    /// What the cluster source does with Users.
    pub fn mode(&self) -> crate::source::cluster::UsersMode {
        match self.mode {
            UsersMode::Watch => crate::source::cluster::UsersMode::Watch,
            UsersMode::OnDemand => crate::source::cluster::UsersMode::OnDemand {
                count_every: std::time::Duration::from_secs(self.count_interval_secs),
            },
        }
    }

    /// The cache of Users read on demand.
    pub fn cache(&self) -> crate::users::CacheSettings {
        crate::users::CacheSettings {
            entries: self.cache_entries,
            ttl: std::time::Duration::from_secs(self.cache_ttl_secs),
            negative_ttl: std::time::Duration::from_secs(self.cache_negative_ttl_secs),
        }
    }
}

/// Where `--kube` reads the four kinds.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// Read the four kinds from the Kubernetes API instead of files (in-cluster service
    /// account, or KUBECONFIG).
    #[arg(long, env = "PORTCULLIS_KUBE")]
    pub kube: bool,
    /// Namespaces to watch with --kube; may repeat (default: all).
    #[arg(
        long = "namespace",
        env = "PORTCULLIS_NAMESPACE",
        value_delimiter = ',',
        requires = "kube"
    )]
    pub namespaces: Vec<String>,
    /// A label selector on the four kinds with --kube (`team=a,tier!=dev`), so that
    /// several deployments can share one cluster's resources.
    #[arg(long, env = "PORTCULLIS_SELECTOR", requires = "kube")]
    pub selector: Option<String>,
}

impl ClusterArgs {
    pub fn settings(&self) -> crate::source::cluster::Settings {
        crate::source::cluster::Settings {
            namespaces: self.namespaces.clone(),
            selector: self.selector.clone().filter(|s| !s.is_empty()),
            root_namespace: None,
            max_regex_bytes: None,
            ..Default::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Configuration files or directories (or --kube).
    #[arg(
        long = "config",
        env = "PORTCULLIS_CONFIG",
        value_delimiter = ',',
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    pub config: Vec<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    /// Decide as for a request of this namespace: the root's resources and this
    /// namespace's apply (default: none, only the root's).
    #[arg(long, env = "PORTCULLIS_REQUEST_NAMESPACE", value_parser = namespace_name)]
    pub request_namespace: Option<String>,
    /// The bearer token to present (omit for an anonymous request).
    #[arg(long, env = "PORTCULLIS_TOKEN")]
    pub token: Option<String>,
    #[arg(long, env = "PORTCULLIS_METHOD", default_value = "GET")]
    pub method: String,
    /// Path with query string.
    #[arg(long, env = "PORTCULLIS_PATH", default_value = "/")]
    pub path: String,
    /// A request header, `name:value`; may repeat. Its variable holds one header, not a
    /// comma-separated list: header values may hold commas.
    #[arg(long = "header", env = "PORTCULLIS_HEADER", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// `tree` (for people, the default) or `json` (the trace as the admin API returns it).
    #[arg(long, env = "PORTCULLIS_OUTPUT", value_enum, default_value_t = ExplainOutput::Tree)]
    pub output: ExplainOutput,
    /// Say which User `serve --create-users` would create for the token. Explain itself
    /// never creates one, nor calls userinfo.
    #[arg(long, env = "PORTCULLIS_CREATE_USERS")]
    pub create_users: bool,
    /// Whether a User without identifiers is found by a token whose `box_user` or `sub`
    /// names it (Aidbox's way). That trusts every issuer that lets a caller choose those
    /// claims; `false` finds Users only through their identifiers.
    #[arg(long, env = "PORTCULLIS_CLAIM_USERS_BY_NAME", default_value_t = true, action = clap::ArgAction::Set)]
    pub claim_users_by_name: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
}

impl ServeArgs {
    /// `--user-create-rate`, `--user-create-burst`, `--max-users-per-namespace`, `--max-users`.
    pub fn creation_limits(&self) -> crate::users::CreationLimits {
        crate::users::CreationLimits {
            rate: self.user_create_rate,
            burst: self.user_create_burst,
            max_per_namespace: self.max_users_per_namespace,
            max_total: self.max_users,
        }
    }
}

/// How `--claim-users-by-name` reads to the user resolver.
pub fn name_claims(claim_users_by_name: bool) -> crate::users::NameClaims {
    if claim_users_by_name {
        crate::users::NameClaims::Allowed
    } else {
        crate::users::NameClaims::IdentifiedOnly
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExplainOutput {
    Tree,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{s:?} is not a positive number of Users per second"
        )),
    }
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not name:value"))?;
    Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `--header` takes `name:value`, and header values may hold commas: its variable
    /// holds one header rather than a comma-separated list.
    const ONE_VALUE_PER_VARIABLE: &[&str] = &["header"];

    /// Every arg with a long name below `command`, with the path of subcommands to it.
    fn long_args(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            if arg.get_long().is_some() {
                out.push((path.to_string(), arg.clone()));
            }
        }
        for sub in command.get_subcommands() {
            long_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    /// README: every flag `--foo-bar` reads `PORTCULLIS_FOO_BAR`, and a repeatable flag's
    /// variable takes comma-separated values. Kept by walking clap's own command, so a
    /// new flag without its variable (or with another name) fails here.
    #[test]
    fn every_flag_reads_its_environment_variable() {
        let mut args = Vec::new();
        long_args(&Cli::command(), "portcullis", &mut args);
        let mut wrong = Vec::new();
        let mut checked = 0;
        for (path, arg) in &args {
            let long = arg.get_long().unwrap();
            // clap's own --help and --version.
            if matches!(long, "help" | "version") {
                continue;
            }
            checked += 1;
            let expected = format!("PORTCULLIS_{}", long.replace('-', "_").to_uppercase());
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            if env.as_deref() != Some(expected.as_str()) {
                wrong.push(format!("{path} --{long}: env {env:?}, expected {expected}"));
            }
            let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
            let delimited = arg.get_value_delimiter() == Some(',');
            if repeatable && !delimited && !ONE_VALUE_PER_VARIABLE.contains(&long) {
                wrong.push(format!(
                    "{path} --{long}: repeatable, but {expected} does not take comma-separated values"
                ));
            }
        }
        assert!(
            checked > 40,
            "only {checked} flags found: the walk is broken"
        );
        assert!(
            wrong.is_empty(),
            "flags off the rule:\n{}",
            wrong.join("\n")
        );
    }

    /// The rule's one exception is still a repeatable flag (else the exception is stale).
    #[test]
    fn the_exception_is_a_repeatable_flag() {
        let mut args = Vec::new();
        long_args(&Cli::command(), "portcullis", &mut args);
        for long in ONE_VALUE_PER_VARIABLE {
            let (_, arg) = args
                .iter()
                .find(|(_, a)| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("no flag --{long}"));
            assert!(matches!(arg.get_action(), clap::ArgAction::Append));
            assert_eq!(arg.get_value_delimiter(), None);
        }
    }
}
