//! The serde mirror of `gateway.yaml`: every key, every default, unknown keys
//! refused (`deny_unknown_fields` everywhere). No validation and no logic
//! beyond reading durations; `validate.rs` checks, `compile.rs` converts.
//!
//! Defaults (SPEC section 3, and where SPEC is silent, chosen here):
//!
//! | key | default |
//! |---|---|
//! | `server` | all defaults below |
//! | `server.listen` | `["0.0.0.0:8080"]` |
//! | `server.tls` | `[]` |
//! | `server.admin_listen` | `"127.0.0.1:9090"`; `null` disables the admin listener |
//! | `server.threads` | number of cores (`std::thread::available_parallelism`, 1 if unknown) |
//! | `server.work_stealing` | `true` (pingora's: idle worker threads take tasks from busy ones) |
//! | `server.upstream_keepalive_pool_size` | `128` (pingora's: idle upstream connections kept) |
//! | `server.max_token_bytes` | `16384` |
//! | `server.limits.max_request_header_bytes` | `32768` |
//! | `server.limits.header_read_timeout` | `10s` |
//! | `server.limits.max_connections` | `10000` |
//! | `server.authz` | none: no authorization endpoint |
//! | `server.authz.listen` | none: no HTTP listener (`server.authz` needs `listen` or `grpc_listen`) |
//! | `server.authz.grpc_listen` | none: no gRPC (Envoy / Istio ext_authz v3) listener |
//! | `server.authz.original_request` | `auto` |
//! | `server.authz.path_prefix` | none (Envoy HTTP `path_prefix`, removed from the check path) |
//! | `server.authz.shared_secret_file` | none: no caller secret |
//! | `issuers` | `[]` |
//! | `issuers[].algorithms` | `[RS256]` |
//! | `issuers[].audiences` | `[]` (no `aud` check) |
//! | `issuers[].leeway` | `30s` |
//! | `issuers[].jwks_refresh` | `5m` |
//! | `issuers[].jwks_min_refresh` | `30s` |
//! | `issuers[].jwks_max_stale` | `24h` |
//! | `issuers[].max_token_lifetime` | none (no lifetime bound) |
//! | `upstreams` | `[]` |
//! | `upstreams[].tls` | `false` |
//! | `upstreams[].sni` | none: with `tls: true` the target's host is used |
//! | `upstreams[].connect_timeout` | `1s` |
//! | `upstreams[].read_timeout` | `30s` |
//! | `upstreams[].health_check.interval` | `10s` |
//! | `routes` | required (may be `[]`) |
//! | `routes[].methods` | any |
//! | `routes[].auth` | `consent` |
//! | `routes[].mode` | `enforce` |
//! | `routes[].scopes` | none (no scope check); `all` / `any` default `[]` |
//! | `routes[].delegation.allow` | `true` |
//! | `routes[].delegation.suppliers` | `[]` (any supplier) |
//! | `routes[].consent.actions` | `[consent]` |
//! | `routes[].consent.subject.types` | `[person, organization]` |
//! | `routes[].consent.metadata.required` / `match` | empty |
//! | `routes[].forward.strip_authorization` | `false` |
//! | `routes[].forward.preserve_host` | `true` |
//! | `service` | none (no name, contact or documentation link) |
//! | `routes[].consumers.altinn_access_lists` | `[]` |
//! | `altinn` | none (no Altinn sync; `altinn_access_lists` then an error) |
//! | `altinn.platform_url` / `maskinporten_url` | the `environment`'s hosts |
//! | `altinn.maskinporten.scopes` | `["altinn:resourceregistry/access-list.read"]` (the scope Altinn documents for reading access lists) |
//! | `altinn.refresh` | `5m` |
//! | `altinn.max_stale` | `24h` |
//! | `altinn.timeout` | `10s` (each HTTP request to Altinn or Maskinporten, body included) |
//! | `altinn.cache_dir` | none (no last good copy survives a restart) |
//! | `audit.enabled` | `true` |
//! | `audit.personal_data` | `masked` |
//! | `tracing` | none: no spans exported |
//! | `tracing.otlp_endpoint` | none (required with `tracing`); `/v1/traces` is appended to a URL without a path |
//! | `tracing.queue_spans` | `2048` (spans waiting for export; more are dropped and counted) |

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::model;

/// A duration written as a string with a unit (`500ms`, `30s`, `5m`, `1h`;
/// humantime syntax). A bare number is refused: `30` could mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    const fn secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as 500ms, 30s, 5m or 1h")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                parse_duration(text).map(HumanDuration).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "a duration needs a unit: write `{n}s` or `{n}ms`, not `{n}`"
                )))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::invalid_type(de::Unexpected::Signed(n), &self))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<HumanDuration, E> {
                Err(E::invalid_type(de::Unexpected::Float(n), &self))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h` (humantime syntax); a bare number,
/// an empty string or an unknown unit is an error that says so.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "a duration needs a unit: write `{trimmed}s` or `{trimmed}ms`, not `{trimmed}`"
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("invalid duration `{text}` ({e}); write e.g. 500ms, 30s, 5m, 1h"))
}

/// A YAML mapping read in file order that refuses a key given twice (a
/// `BTreeMap` would keep the last one silently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    /// Required (an empty list is allowed: every request is then `no_route`).
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub audit: RawAudit,
    #[serde(default)]
    pub state: RawState,
    /// The service as its consumers know it (SPEC 13): feeds
    /// `consent-gateway docs` and the problem bodies' `documentation`.
    #[serde(default)]
    pub service: Option<RawService>,
    /// SPEC section 13 "Altinn": where access lists and resources are synced from.
    #[serde(default)]
    pub altinn: Option<RawAltinn>,
    /// SPEC section 13 "Logs and traces": OTLP span export.
    #[serde(default)]
    pub tracing: Option<RawTracing>,
}

/// `tracing:` (SPEC section 13). Read at start only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`) or its
    /// full traces URL.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Finished spans waiting for export before new ones are dropped.
    #[serde(default = "default_queue_spans")]
    pub queue_spans: usize,
}

fn default_queue_spans() -> usize {
    super::DEFAULT_TRACE_QUEUE_SPANS
}

/// `state.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBackend {
    #[default]
    Memory,
    Redis,
}

/// `state:` (SPEC section 13): where one-time consents and rate limits live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawState {
    pub backend: RawBackend,
    pub redis: Option<RawRedis>,
}

/// `state.redis:`. Exactly one of `url` (standalone), `sentinel` or
/// `cluster` names the servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub sentinel: Option<RawSentinel>,
    #[serde(default)]
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub tls: Option<RawRedisTls>,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// A one-time use counts once this many replicas have it (`WAIT`).
    #[serde(default)]
    pub wait_for_replicas: u32,
    #[serde(default = "default_state_timeout")]
    pub timeout: HumanDuration,
}

/// `state.redis.sentinel:`: the sentinels and the master they watch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master_name: String,
    /// The sentinels (`redis://[:password@]host:26379`).
    pub urls: Vec<String>,
    /// The master's database, user and password.
    #[serde(default)]
    pub db: i64,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

/// `state.redis.cluster:`: some of the cluster's nodes (the rest are found).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub urls: Vec<String>,
}

/// `state.redis.tls:`: with `rediss://` URLs, the CA to trust instead of
/// the system's and an optional client certificate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_key_prefix() -> String {
    "cgw:".into()
}
fn default_state_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(50))
}

/// `routes[].rate_limit.per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawRatePer {
    #[default]
    Consumer,
    ConsumerAndSubject,
}

/// `routes[].rate_limit.on_store_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOnStoreError {
    #[default]
    Allow,
    Deny,
}

/// `routes[].rate_limit:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    #[serde(default)]
    pub per: RawRatePer,
    pub requests: u64,
    pub period: HumanDuration,
    #[serde(default)]
    pub burst: u64,
    #[serde(default)]
    pub on_store_error: RawOnStoreError,
}

/// `service:` (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    #[serde(default)]
    pub name: Option<String>,
    /// Whom a consumer asks for access: an e-mail address, a URL or a name.
    #[serde(default)]
    pub contact: Option<String>,
    /// Where the consumer documentation is published (an http or https URL).
    #[serde(default)]
    pub documentation_url: Option<String>,
}

/// `altinn.environment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAltinnEnvironment {
    Tt02,
    Production,
}

fn default_altinn_scopes() -> Vec<String> {
    vec!["altinn:resourceregistry/access-list.read".to_string()]
}
fn default_altinn_refresh() -> HumanDuration {
    HumanDuration::secs(5 * 60)
}
fn default_altinn_max_stale() -> HumanDuration {
    HumanDuration::secs(24 * 60 * 60)
}
fn default_altinn_timeout() -> HumanDuration {
    HumanDuration::secs(10)
}

/// `altinn:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAltinn {
    pub environment: RawAltinnEnvironment,
    #[serde(default)]
    pub platform_url: Option<String>,
    #[serde(default)]
    pub maskinporten_url: Option<String>,
    pub maskinporten: RawMaskinporten,
    #[serde(default = "default_altinn_refresh")]
    pub refresh: HumanDuration,
    #[serde(default = "default_altinn_max_stale")]
    pub max_stale: HumanDuration,
    #[serde(default = "default_altinn_timeout")]
    pub timeout: HumanDuration,
    /// Relative to the directory of `gateway.yaml`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

/// `altinn.maskinporten:` (the gateway's own Maskinporten client).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaskinporten {
    pub client_id: String,
    pub kid: String,
    /// Relative to the directory of `gateway.yaml`.
    pub key_file: PathBuf,
    #[serde(default = "default_altinn_scopes")]
    pub scopes: Vec<String>,
}

/// `routes[].consumers.altinn_access_lists[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAltinnAccessList {
    pub owner: String,
    pub identifier: String,
}

/// `server:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Vec<String>,
    pub tls: Vec<RawTlsListener>,
    /// `None` when written as `null`: no admin listener.
    pub admin_listen: Option<String>,
    /// `None`: number of cores.
    pub threads: Option<usize>,
    pub max_token_bytes: usize,
    pub limits: RawLimits,
    /// `None`: no authorization endpoint (SPEC section 13).
    pub authz: Option<RawAuthz>,
    /// HTTP/2 with prior knowledge on the plain listeners (SPEC section 13).
    pub h2c: bool,
    /// pingora's `work_stealing`: worker threads share one runtime and take
    /// each other's tasks (`false`: one single-threaded runtime per thread).
    pub work_stealing: bool,
    /// pingora's `upstream_keepalive_pool_size`: how many idle upstream
    /// connections are kept for reuse.
    pub upstream_keepalive_pool_size: usize,
}

/// `server.authz:` (SPEC section 13, external authorization).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthz {
    pub listen: Option<String>,
    pub grpc_listen: Option<String>,
    #[serde(default)]
    pub original_request: RawOriginalRequest,
    /// Envoy HTTP ext_authz `http_service.path_prefix`: removed from the
    /// front of the check request's path.
    pub path_prefix: Option<String>,
    pub shared_secret_file: Option<PathBuf>,
}

/// `server.authz.original_request`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawOriginalRequest {
    #[default]
    Auto,
    Envoy,
    Nginx,
    Traefik,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: vec!["0.0.0.0:8080".to_string()],
            tls: Vec::new(),
            admin_listen: Some("127.0.0.1:9090".to_string()),
            threads: None,
            max_token_bytes: 16384,
            limits: RawLimits::default(),
            authz: None,
            h2c: false,
            work_stealing: true,
            upstream_keepalive_pool_size: 128,
        }
    }
}

/// `server.tls[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsListener {
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The protocols offered by ALPN, in preference order (SPEC section
    /// 13); default `[http/1.1]`.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<RawAlpn>,
}

/// One protocol of `server.tls[].alpn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RawAlpn {
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "http/1.1")]
    Http11,
}

fn default_alpn() -> Vec<RawAlpn> {
    vec![RawAlpn::Http11]
}

/// `upstreams[].protocol` (SPEC section 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawProtocol {
    #[default]
    H1,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/2 over cleartext, prior knowledge.
    H2c,
}

/// `server.limits:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub max_request_header_bytes: usize,
    pub header_read_timeout: HumanDuration,
    pub max_connections: usize,
    /// Concurrent streams one HTTP/2 client connection may open.
    pub h2_max_concurrent_streams: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_request_header_bytes: 32768,
            header_read_timeout: HumanDuration::secs(10),
            max_connections: 10000,
            h2_max_concurrent_streams: 100,
        }
    }
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_string()]
}
fn default_leeway() -> HumanDuration {
    HumanDuration(model::DEFAULT_LEEWAY)
}
fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(model::DEFAULT_JWKS_REFRESH)
}
fn default_jwks_min_refresh() -> HumanDuration {
    HumanDuration(model::DEFAULT_JWKS_MIN_REFRESH)
}
fn default_jwks_max_stale() -> HumanDuration {
    HumanDuration(model::DEFAULT_JWKS_MAX_STALE)
}

/// `issuers[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub name: String,
    pub issuer: String,
    /// Exactly one of `jwks_uri` and `jwks_file`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// A JWKS document on disk (relative to gateway.yaml), read like a
    /// fetch: at start, every `jwks_refresh`, and on an unknown `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Kept as text so `none` and HS* get a precise error at validation.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: HumanDuration,
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh: HumanDuration,
    #[serde(default = "default_jwks_max_stale")]
    pub jwks_max_stale: HumanDuration,
    #[serde(default)]
    pub max_token_lifetime: Option<HumanDuration>,
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_health_interval() -> HumanDuration {
    HumanDuration::secs(10)
}

/// `upstreams[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: String,
    pub targets: Vec<String>,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    #[serde(default)]
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub protocol: RawProtocol,
}

/// `upstreams[].health_check:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: HumanDuration,
}

/// `routes[].auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAuth {
    #[default]
    Consent,
    Token,
    None,
}

/// `routes[].mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawMode {
    #[default]
    Enforce,
    ReportOnly,
}

/// `routes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default)]
    pub host: Option<String>,
    pub path: String,
    /// `None`: any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub upstream: String,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    /// The most a route that binds the body buffers (default 64 KiB).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<RawScopes>,
    #[serde(default)]
    pub delegation: Option<RawDelegation>,
    #[serde(default)]
    pub consumers: Option<RawConsumers>,
    #[serde(default)]
    pub consent: Option<RawConsent>,
    #[serde(default)]
    pub mode: RawMode,
    #[serde(default)]
    pub forward: RawForward,
    #[serde(default)]
    pub rate_limit: Option<RawRateLimit>,
    /// Denials are gRPC statuses in a trailers-only response (SPEC 13).
    #[serde(default)]
    pub grpc: bool,
}

/// `routes[].scopes:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScopes {
    pub all: Vec<String>,
    pub any: Vec<String>,
}

/// `routes[].delegation:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDelegation {
    pub allow: bool,
    pub suppliers: Vec<String>,
}

impl RawRoute {
    /// Whether the route's subject or metadata binding reads the body.
    pub fn reads_body(&self) -> bool {
        self.consent.as_ref().is_some_and(|c| {
            c.subject.as_ref().is_some_and(|s| s.body.is_some())
                || c.metadata.matches.0.iter().any(|(_, b)| b.body.is_some())
        })
    }
}

impl Default for RawDelegation {
    fn default() -> Self {
        Self {
            allow: true,
            suppliers: Vec::new(),
        }
    }
}

/// `routes[].consumers:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsumers {
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Relative to the directory of `gateway.yaml`.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Lists in Altinn's Resource Registry whose members join `allow` and `file`.
    #[serde(default)]
    pub altinn_access_lists: Option<Vec<RawAltinnAccessList>>,
}

fn default_actions() -> Vec<String> {
    vec!["consent".to_string()]
}

/// `routes[].consent:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    pub resources: Vec<String>,
    #[serde(default = "default_actions")]
    pub actions: Vec<String>,
    #[serde(default)]
    pub subject: Option<RawSubject>,
    #[serde(default)]
    pub metadata: RawMetadata,
    /// Each consent `id` is usable once (SPEC section 13).
    #[serde(default)]
    pub one_time: bool,
}

/// `routes[].consent.subject.types[]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawSubjectType {
    Person,
    Organization,
}

fn default_subject_types() -> Vec<RawSubjectType> {
    vec![RawSubjectType::Person, RawSubjectType::Organization]
}

/// `routes[].consent.subject:` (exactly one of `path_param`, `header`, `query`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubject {
    #[serde(default)]
    pub path_param: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub body: Option<RawBodyField>,
    #[serde(default = "default_subject_types")]
    pub types: Vec<RawSubjectType>,
}

/// A request value: exactly one of `path_param`, `header`, `query`, `body`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBinding {
    #[serde(default)]
    pub path_param: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub body: Option<RawBodyField>,
}

/// A value in the request body: exactly one of `json_pointer` (RFC 6901)
/// and `form_field`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBodyField {
    #[serde(default)]
    pub json_pointer: Option<String>,
    #[serde(default)]
    pub form_field: Option<String>,
}

/// `routes[].consent.metadata:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetadata {
    pub required: Vec<String>,
    #[serde(rename = "match")]
    pub matches: OrderedMap<RawBinding>,
}

/// `routes[].forward:`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawForward {
    pub strip_authorization: bool,
    pub preserve_host: bool,
}

impl Default for RawForward {
    fn default() -> Self {
        Self {
            strip_authorization: false,
            preserve_host: true,
        }
    }
}

/// `audit.personal_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawPersonalData {
    #[default]
    Masked,
    Clear,
    Omit,
    Pseudonymized,
}

/// `audit:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub enabled: bool,
    pub personal_data: RawPersonalData,
    /// The HMAC-SHA256 key of `personal_data: pseudonymized` (SPEC 13).
    pub pseudonym_key_file: Option<PathBuf>,
    /// Lines the writer queue holds before it drops (read at start only).
    pub queue_lines: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            enabled: true,
            personal_data: RawPersonalData::Masked,
            pseudonym_key_file: None,
            queue_lines: super::DEFAULT_AUDIT_QUEUE_LINES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(text: &str) -> Result<Duration, String> {
        parse_duration(text)
    }

    #[test]
    fn durations_with_units_parse() {
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(dur("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(dur("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(dur("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(dur("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bare_numbers_and_garbage_are_refused() {
        for text in ["30", "0", "1.5", "", "thirty seconds", "30 parsecs", "-1s"] {
            assert!(dur(text).is_err(), "{text:?} should be refused");
        }
        assert!(dur("30").unwrap_err().contains("needs a unit"));
    }

    #[test]
    fn yaml_number_is_not_a_duration() {
        let err = serde_yaml::from_str::<HumanDuration>("30").unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
        assert!(serde_yaml::from_str::<HumanDuration>("-5").is_err());
        assert!(serde_yaml::from_str::<HumanDuration>("1.5").is_err());
        assert_eq!(
            serde_yaml::from_str::<HumanDuration>("\"5m\"").ok(),
            Some(HumanDuration(Duration::from_secs(300)))
        );
        assert_eq!(
            serde_yaml::from_str::<HumanDuration>("250ms").ok(),
            Some(HumanDuration(Duration::from_millis(250)))
        );
    }

    #[test]
    fn minimal_file_takes_every_default() {
        let raw: RawConfig = serde_yaml::from_str("routes: []\n").unwrap();
        assert_eq!(raw.server.listen, vec!["0.0.0.0:8080"]);
        assert_eq!(raw.server.admin_listen.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(raw.server.threads, None);
        assert_eq!(raw.server.max_token_bytes, 16384);
        assert_eq!(raw.server.limits.max_request_header_bytes, 32768);
        assert_eq!(
            raw.server.limits.header_read_timeout.0,
            Duration::from_secs(10)
        );
        assert_eq!(raw.server.limits.max_connections, 10000);
        assert!(raw.audit.enabled);
        assert_eq!(raw.audit.personal_data, RawPersonalData::Masked);
    }

    #[test]
    fn admin_listen_null_disables_it() {
        let raw: RawConfig =
            serde_yaml::from_str("server:\n  admin_listen: null\nroutes: []\n").unwrap();
        assert_eq!(raw.server.admin_listen, None);
    }

    #[test]
    fn issuer_and_route_defaults() {
        let raw: RawConfig = serde_yaml::from_str(
            "issuers:\n  - {name: a, issuer: 'https://a/', jwks_uri: 'https://a/jwk'}\n\
             upstreams:\n  - {name: u, targets: ['h:1']}\n\
             routes:\n  - {name: r, path: /x, upstream: u, consent: {resources: [res]}}\n",
        )
        .unwrap();
        let issuer = &raw.issuers[0];
        assert_eq!(issuer.algorithms, vec!["RS256"]);
        assert_eq!(issuer.leeway.0, Duration::from_secs(30));
        assert_eq!(issuer.jwks_refresh.0, Duration::from_secs(300));
        assert_eq!(issuer.jwks_min_refresh.0, Duration::from_secs(30));
        assert_eq!(issuer.jwks_max_stale.0, Duration::from_secs(86400));
        assert_eq!(issuer.max_token_lifetime, None);
        let upstream = &raw.upstreams[0];
        assert!(!upstream.tls);
        assert_eq!(upstream.connect_timeout.0, Duration::from_secs(1));
        assert_eq!(upstream.read_timeout.0, Duration::from_secs(30));
        let route = &raw.routes[0];
        assert_eq!(route.auth, RawAuth::Consent);
        assert_eq!(route.mode, RawMode::Enforce);
        assert!(route.methods.is_none());
        assert!(!route.forward.strip_authorization);
        assert!(route.forward.preserve_host);
        let consent = route.consent.as_ref().unwrap();
        assert_eq!(consent.actions, vec!["consent"]);
        assert!(consent.metadata.required.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_yaml::from_str::<RawConfig>("routes: []\nserver:\n  listn: []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listn`"), "{err}");
    }

    #[test]
    fn duplicate_metadata_match_key_is_refused() {
        let err = serde_yaml::from_str::<RawMetadata>("match:\n  a: {query: x}\n  a: {query: y}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate key `a`"), "{err}");
    }
}
