//! The validated runtime types the gateway runs on, compiled from the file
//! format in `raw.rs`. Everything here is already checked: the policy core
//! trusts these values without re-validating them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::keys::Alg;

/// One issuer whose tokens routes may accept.
#[derive(Debug, Clone, PartialEq)]
pub struct Issuer {
    pub name: String,
    /// Exact match on the token's `iss`, trailing slash included.
    pub issuer: String,
    /// Empty when the keys come from `jwks_file`.
    pub jwks_uri: String,
    /// The JWKS document on disk (resolved), instead of `jwks_uri`.
    pub jwks_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Allowed `alg` values; never `none` nor HS*.
    pub algorithms: Vec<Alg>,
    /// When non-empty, `aud` must contain one of these.
    pub audiences: Vec<String>,
    pub leeway: Duration,
    pub jwks_refresh: Duration,
    pub jwks_min_refresh: Duration,
    pub jwks_max_stale: Duration,
    pub max_token_lifetime: Option<Duration>,
}

/// The defaults of an `issuers[]` entry (the table atop `raw.rs`).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(24 * 60 * 60);

impl Issuer {
    /// An issuer with every optional setting at its default: RS256 only, no
    /// `aud` check, no CA file, no lifetime bound, the default leeway and
    /// JWKS timings. What a `gateway.yaml` entry with only `name`, `issuer`
    /// and `jwks_uri` compiles to.
    pub fn with_defaults(name: &str, issuer: &str, jwks_uri: &str) -> Issuer {
        Issuer {
            name: name.into(),
            issuer: issuer.into(),
            jwks_uri: jwks_uri.into(),
            jwks_file: None,
            ca_file: None,
            algorithms: vec![Alg::RS256],
            audiences: vec![],
            leeway: DEFAULT_LEEWAY,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            jwks_min_refresh: DEFAULT_JWKS_MIN_REFRESH,
            jwks_max_stale: DEFAULT_JWKS_MAX_STALE,
            max_token_lifetime: None,
        }
    }
}

/// How a route authenticates requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A valid token and a consent covering the request (checks 3-21).
    Consent,
    /// A valid token and scopes, delegation and consumer rules (checks 3-14).
    Token,
    /// No authentication (checks 3-21 skipped); header hygiene still applies.
    None,
}

/// Whether a route enforces its decision or only reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    ReportOnly,
}

/// Where a request value bound by `subject` or `metadata.match` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// A `{param}` of the route's path template.
    PathParam(String),
    /// A request header (lowercased name; compared case-insensitively).
    Header(String),
    /// A query-string parameter (exact name).
    Query(String),
    /// A value in the request body.
    Body(BodyField),
}

/// Where in the body a bound value is (SPEC section 13, "Routes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyField {
    /// An RFC 6901 JSON pointer into an `application/json` (or `+json`) body.
    JsonPointer(String),
    /// A field of an `application/x-www-form-urlencoded` body (exact name).
    FormField(String),
}

/// The default and the ceiling of `max_body_bytes`: pingora replays at most
/// this much of a body it has already read (its retry buffer), so a larger
/// buffered body could not be forwarded byte for byte.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Scope requirements; both empty means no scope check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeRule {
    /// Every one must be present.
    pub all: Vec<String>,
    /// At least one must be present, when non-empty.
    pub any: Vec<String>,
}

/// What tokens with a `supplier` may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegationRule {
    pub allow: bool,
    /// When `Some`, `supplier.ID` must be listed (normalised `0192:<orgnr>`).
    pub suppliers: Option<HashSet<String>>,
}

impl Default for DelegationRule {
    fn default() -> Self {
        Self {
            allow: true,
            suppliers: None,
        }
    }
}

/// Which kinds of data subject a consent's `from` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectTypes {
    pub person: bool,
    pub organization: bool,
}

/// The consent rules of an `auth: consent` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRule {
    /// `urn:altinn:resource` values; one must match.
    pub resources: Vec<String>,
    /// Every one must be listed in the matching right's `action`.
    pub actions: Vec<String>,
    /// Binds the request's data subject to the consent's `from`.
    pub subject: Option<Binding>,
    pub subject_types: SubjectTypes,
    /// Metadata keys (lowercased) the matching right must have.
    pub metadata_required: Vec<String>,
    /// Metadata keys (lowercased) whose value must equal a request value.
    pub metadata_match: Vec<(String, Binding)>,
}

/// The authentication and authorisation rules of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuth {
    pub mode: AuthMode,
    /// Indexes into `Snapshot::issuers` of the issuers this route accepts.
    pub issuers: Vec<usize>,
    pub scopes: ScopeRule,
    pub delegation: DelegationRule,
    /// When `Some`, `consumer.ID` must be listed (normalised `0192:<orgnr>`).
    /// Holds `allow` and `file`; always `Some` when `altinn` is.
    pub consumers: Option<HashSet<String>>,
    /// The members of the route's Altinn access lists, as synced for this
    /// generation (SPEC section 13); they join `consumers`.
    pub altinn: Option<SyncedConsumers>,
    /// Present exactly when `mode` is `Consent`.
    pub consent: Option<ConsentRule>,
}

/// An access list in Altinn's Resource Registry, by owner and identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccessListRef {
    pub owner: String,
    pub identifier: String,
}

impl std::fmt::Display for AccessListRef {
    /// `owner/identifier`: the `list` label of the metrics, the key in `/status`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.identifier)
    }
}

/// The Altinn-synced part of a route's consumer access list. Compiled with
/// no copies; each generation fills it from the last good copies
/// (`altinn::sync`). The stale bound is a time in the copy, so it needs no
/// new generation to take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedConsumers {
    pub lists: Vec<SyncedList>,
}

/// One Altinn access list as this generation knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedList {
    pub list: AccessListRef,
    /// Normalised `0192:<orgnr>`.
    pub members: Arc<HashSet<String>>,
    /// Until when the copy may be used; shared with the sync, which moves it
    /// on with every good sync (members unchanged need no new generation).
    pub fresh: Freshness,
}

/// `last good sync + max_stale`, in unix milliseconds; 0: no copy yet
/// (neither from Altinn nor from the cache). One cell shared by the sync and
/// every generation that holds the list.
#[derive(Debug, Clone, Default)]
pub struct Freshness(Arc<std::sync::atomic::AtomicU64>);

impl Freshness {
    /// Usable before `until_ms` (unix milliseconds).
    pub fn set(&self, until_ms: u64) {
        self.0
            .store(until_ms.max(1), std::sync::atomic::Ordering::Release);
    }

    /// `None` when there is no copy.
    pub fn until_ms(&self) -> Option<u64> {
        Some(self.0.load(std::sync::atomic::Ordering::Acquire)).filter(|&ms| ms > 0)
    }

    /// Is the copy usable at `now` (unix seconds)?
    pub fn usable(&self, now: f64) -> bool {
        self.until_ms()
            .is_some_and(|until| now * 1000.0 < until as f64)
    }
}

impl PartialEq for Freshness {
    fn eq(&self, other: &Self) -> bool {
        self.until_ms() == other.until_ms()
    }
}

impl Eq for Freshness {}

/// Check 14's reading of the synced lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncedVerdict {
    /// On a list whose copy is usable.
    Listed,
    /// On no list, and every list's copy is usable.
    NotListed,
    /// On no usable list, and some list has no usable copy.
    Unavailable,
}

impl SyncedConsumers {
    /// Lists without a copy (what `compile` produces).
    pub fn empty(lists: Vec<AccessListRef>) -> Self {
        Self {
            lists: lists
                .into_iter()
                .map(|list| SyncedList {
                    list,
                    members: Arc::default(),
                    fresh: Freshness::default(),
                })
                .collect(),
        }
    }

    /// Is `consumer` on a usable copy at `now` (unix seconds)? A stale copy's
    /// members are not honoured (fail closed).
    pub fn check(&self, consumer: &str, now: f64) -> SyncedVerdict {
        let usable = |l: &SyncedList| l.fresh.usable(now);
        if self
            .lists
            .iter()
            .any(|l| usable(l) && l.members.contains(consumer))
        {
            SyncedVerdict::Listed
        } else if self.lists.iter().all(usable) {
            SyncedVerdict::NotListed
        } else {
            SyncedVerdict::Unavailable
        }
    }
}

/// `altinn.environment`: a preset of hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AltinnEnvironment {
    Tt02,
    Production,
}

impl AltinnEnvironment {
    pub fn name(self) -> &'static str {
        match self {
            AltinnEnvironment::Tt02 => "tt02",
            AltinnEnvironment::Production => "production",
        }
    }

    /// The Altinn platform base URL.
    pub fn platform_url(self) -> &'static str {
        match self {
            AltinnEnvironment::Tt02 => "https://platform.tt02.altinn.no",
            AltinnEnvironment::Production => "https://platform.altinn.no",
        }
    }

    /// The Maskinporten base URL (its issuer is this with a trailing slash).
    pub fn maskinporten_url(self) -> &'static str {
        match self {
            AltinnEnvironment::Tt02 => "https://test.maskinporten.no",
            AltinnEnvironment::Production => "https://maskinporten.no",
        }
    }
}

/// The `altinn` section: the gateway's own Maskinporten client and how
/// Altinn is synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Altinn {
    pub environment: AltinnEnvironment,
    /// Without a trailing slash.
    pub platform_url: String,
    /// Without a trailing slash; the token endpoint is `<this>/token`, the
    /// client assertion's `aud` is `<this>/`.
    pub maskinporten_url: String,
    pub client_id: String,
    pub kid: String,
    /// The PEM file of the client's RSA private key (read by the client,
    /// never kept in the configuration).
    pub key_file: PathBuf,
    pub scopes: Vec<String>,
    pub refresh: Duration,
    pub max_stale: Duration,
    pub timeout: Duration,
    pub cache_dir: Option<PathBuf>,
}

impl Altinn {
    /// Every Altinn access list some route names, sorted, once each.
    pub fn lists_in_use(config: &Config) -> Vec<AccessListRef> {
        let mut lists: Vec<AccessListRef> = config
            .routes
            .iter()
            .filter_map(|r| r.auth.altinn.as_ref())
            .flat_map(|a| a.lists.iter().map(|l| l.list.clone()))
            .collect();
        lists.sort();
        lists.dedup();
        lists
    }

    /// The access lists of `config`'s routes that this generation holds no
    /// copy of (neither from Altinn nor from the cache).
    pub fn lists_without_copy(config: &Config) -> Vec<AccessListRef> {
        let mut lists: Vec<AccessListRef> = config
            .routes
            .iter()
            .filter_map(|r| r.auth.altinn.as_ref())
            .flat_map(|a| a.lists.iter())
            .filter(|l| l.fresh.until_ms().is_none())
            .map(|l| l.list.clone())
            .collect();
        lists.sort();
        lists.dedup();
        lists
    }
}

/// How the request is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardRule {
    pub strip_authorization: bool,
    pub preserve_host: bool,
}

impl Default for ForwardRule {
    fn default() -> Self {
        Self {
            strip_authorization: false,
            preserve_host: true,
        }
    }
}

/// A route's path template, parsed once (at validation) for every later
/// use: the route table, bindings, `strip_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The template as written.
    pub text: String,
    /// Parameter names in order (`{x}` and the final `{*x}`).
    pub params: Vec<String>,
    /// The literal segments before the first parameter.
    pub literal_prefix: Vec<String>,
}

/// One route, in file order.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// Exact host (lowercased), `*.suffix`, or any when `None`.
    pub host: Option<String>,
    /// The path template as written, e.g. `/income/{fnr}/{year}`.
    pub path: String,
    /// `path`, parsed.
    pub template: PathTemplate,
    /// Upper-case method names; empty means any.
    pub methods: Vec<String>,
    /// Index into `Snapshot::upstreams`.
    pub upstream: usize,
    /// Segment-aware prefix removed before proxying.
    pub strip_prefix: Option<String>,
    /// `Some` exactly when a binding reads the body: the most buffered.
    pub max_body_bytes: Option<usize>,
    pub auth: RouteAuth,
    pub mode: Mode,
    pub forward: ForwardRule,
    /// `consent.one_time`: each consent `id` is usable once.
    pub one_time: bool,
    pub rate_limit: Option<RateLimit>,
    /// `grpc: true`: refusals are gRPC statuses (trailers-only).
    pub grpc: bool,
}

/// What a route's rate limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    Consumer,
    /// The consumer and the consent's data subject (`auth: consent` only).
    ConsumerAndSubject,
}

impl RatePer {
    pub fn as_str(self) -> &'static str {
        match self {
            RatePer::Consumer => "consumer",
            RatePer::ConsumerAndSubject => "consumer_and_subject",
        }
    }
}

/// `routes[].rate_limit`: `requests` per `period`, plus `burst` more at
/// once (a GCRA whose bucket holds `requests + burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per: RatePer,
    pub requests: u64,
    pub period: Duration,
    pub burst: u64,
    /// When the store cannot be reached: `true` lets the request through.
    pub allow_on_store_error: bool,
}

/// The default `state.redis.timeout`.
pub const DEFAULT_STATE_TIMEOUT: Duration = Duration::from_millis(50);

/// `state.redis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisState {
    pub servers: RedisServers,
    /// TLS settings for `rediss://` (`None`: the system's roots, no client
    /// certificate).
    pub tls: Option<RedisTls>,
    pub key_prefix: String,
    /// A one-time use counts only once this many replicas acknowledged it
    /// (`WAIT`); else it is given back and the request fails closed.
    pub wait_for_replicas: u32,
    /// Bound on every store call (connect included).
    pub timeout: Duration,
}

/// Where the Redis servers are: `state.redis.url`, `.sentinel` or `.cluster`.
/// `Debug` never shows the master's password.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisServers {
    /// `redis://` or `rediss://`, checked at load.
    Standalone { url: String },
    /// The sentinels find the master of `master_name`; a failover moves it.
    Sentinel {
        master_name: String,
        urls: Vec<String>,
        db: i64,
        username: Option<String>,
        password: Option<String>,
    },
    /// Seed nodes of a Redis Cluster.
    Cluster { urls: Vec<String> },
}

impl std::fmt::Debug for RedisServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisServers::Standalone { url } => {
                f.debug_struct("Standalone").field("url", url).finish()
            }
            RedisServers::Sentinel {
                master_name,
                urls,
                db,
                username,
                password,
            } => f
                .debug_struct("Sentinel")
                .field("master_name", master_name)
                .field("urls", urls)
                .field("db", db)
                .field("username", username)
                .field("password", &password.as_ref().map(|_| "<redacted>"))
                .finish(),
            RedisServers::Cluster { urls } => {
                f.debug_struct("Cluster").field("urls", urls).finish()
            }
        }
    }
}

impl RedisServers {
    /// `standalone`, `sentinel` or `cluster`, for `/status` and `check`.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisServers::Standalone { .. } => "standalone",
            RedisServers::Sentinel { .. } => "sentinel",
            RedisServers::Cluster { .. } => "cluster",
        }
    }

    /// Whether the URLs say `rediss://` (validation keeps them all alike).
    pub fn tls(&self) -> bool {
        match self {
            RedisServers::Standalone { url } => url.starts_with("rediss://"),
            RedisServers::Sentinel { urls, .. } | RedisServers::Cluster { urls } => {
                urls.iter().any(|u| u.starts_with("rediss://"))
            }
        }
    }
}

/// `state.redis.tls`, paths resolved against the config's directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// sha256 of the files' contents when the config was loaded: new
    /// certificates make a new `state`, and so a new store.
    pub files_sha256: String,
}

/// `state`: where one-time consents and rate limits live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateBackend {
    /// This process only (one replica).
    #[default]
    Memory,
    Redis(Box<RedisState>),
}

/// A TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// ALPN offers `h2` (before `http/1.1` when both are listed).
    pub h2: bool,
    /// ALPN offers `http/1.1`.
    pub http11: bool,
}

/// How the gateway speaks to an upstream (`upstreams[].protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    H1,
    /// HTTP/2 over TLS, negotiated by ALPN.
    H2,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::H1 => "h1",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::H2c => "h2c",
        }
    }
}

/// Protections applied before any route logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of every HTTP/2 client connection.
    pub h2_max_concurrent_streams: u32,
}

/// Listener and process settings (listeners, `threads`, `admin_listen` need a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub tls: Vec<TlsListener>,
    pub admin_listen: Option<SocketAddr>,
    pub threads: usize,
    pub max_token_bytes: usize,
    pub limits: Limits,
    /// `server.authz`: the external authorization endpoints.
    pub authz: Option<Authz>,
    /// `server.h2c`: the plain listeners also take HTTP/2 with prior knowledge.
    pub h2c: bool,
    /// `server.work_stealing` (pingora's runtime flavour).
    pub work_stealing: bool,
    /// `server.upstream_keepalive_pool_size` (pingora's idle upstream pool).
    pub upstream_keepalive_pool_size: usize,
}

/// Where an authorization endpoint reads the original request's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginalRequest {
    /// nginx when `X-Original-URI` came, Traefik when `X-Forwarded-Uri`
    /// came, else Envoy.
    Auto,
    Envoy,
    Nginx,
    Traefik,
}

/// `server.authz` (SPEC section 13). The listeners need a restart; the
/// secret is re-read with every generation.
#[derive(Clone, PartialEq, Eq)]
pub struct Authz {
    pub listen: Option<SocketAddr>,
    pub grpc_listen: Option<SocketAddr>,
    pub original_request: OriginalRequest,
    /// Envoy HTTP `path_prefix`, `/`-led, without a trailing `/`.
    pub path_prefix: Option<String>,
    /// What callers must send in `X-Consent-Gateway-Authz` (trimmed file
    /// content); `None`: no secret asked.
    pub shared_secret: Option<std::sync::Arc<[u8]>>,
}

impl std::fmt::Debug for Authz {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authz")
            .field("listen", &self.listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("original_request", &self.original_request)
            .field("path_prefix", &self.path_prefix)
            .field("shared_secret", &self.shared_secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Active health check of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
}

/// An upstream pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    /// `host:port` strings (an IP or a DNS name, e.g. a Kubernetes Service),
    /// checked for shape at load and resolved when the pool is built.
    pub targets: Vec<String>,
    pub tls: bool,
    pub sni: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub health_check: Option<HealthCheck>,
    pub protocol: UpstreamProtocol,
}

/// How national identity numbers appear in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonalData {
    Masked,
    Clear,
    Omit,
    /// `p:` + the first 16 base64url characters of HMAC-SHA256(key, number).
    Pseudonymized,
}

/// The default length of the audit writer's queue (`audit.queue_lines`).
pub const DEFAULT_AUDIT_QUEUE_LINES: usize = 1024;

/// The audit log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub enabled: bool,
    pub personal_data: PersonalData,
    /// The pseudonym key's bytes (read at load, so a reload re-reads it).
    pub pseudonym_key: Option<std::sync::Arc<[u8]>>,
    /// The writer queue's length in lines (restart-only).
    pub queue_lines: usize,
}

/// The default length of the span export queue (`tracing.queue_spans`).
pub const DEFAULT_TRACE_QUEUE_SPANS: usize = 2048;

/// `tracing:` (SPEC section 13): where spans go. Restart-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracing {
    /// The full OTLP/HTTP traces URL (`.../v1/traces`).
    pub otlp_endpoint: String,
    /// Finished spans the export queue holds; more are dropped and counted.
    pub queue_spans: usize,
}

/// The service as its consumers know it (`service:`; SPEC 13).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Service {
    pub name: Option<String>,
    pub contact: Option<String>,
    /// An absolute http(s) URL without a fragment: problem bodies link
    /// `<documentation_url>#<reason>`.
    pub documentation_url: Option<String>,
}

/// A whole validated configuration: what one generation runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub issuers: Vec<Issuer>,
    pub upstreams: Vec<Upstream>,
    pub routes: Vec<Route>,
    pub audit: Audit,
    pub state: StateBackend,
    /// `service:` (all fields `None` when absent).
    pub service: Service,
    /// SPEC section 13: `None` without an `altinn` section.
    pub altinn: Option<Altinn>,
    /// SPEC section 13: `None` without `tracing.otlp_endpoint` (no export).
    pub tracing: Option<Tracing>,
    /// The files this configuration was read from (config and access lists),
    /// watched for reload.
    pub source_files: Vec<PathBuf>,
    /// sha256 (hex) of the config file's bytes.
    pub config_sha256: String,
    /// sha256 (hex) over the config and every access-list file: a change in
    /// any of them is a new generation.
    pub content_sha256: String,
}
