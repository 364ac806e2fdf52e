//! Cross-checks of the raw file (SPEC section 3): every error is collected,
//! with its field path, and reported together. Also the pure leaf checks
//! (addresses, host patterns, path templates, methods, algorithms, JWKS URIs,
//! header names) that `compile.rs` reuses. Reads the files the config names
//! (access lists, certificates, keys, CA files) through a `FileSource`, so it
//! does no I/O of its own and never touches the network.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use super::model::{PathTemplate, MAX_BODY_BYTES};
use super::orgno::{self, normalize_org_entry};
use super::raw::{
    RawAlpn, RawAltinn, RawAudit, RawAuth, RawAuthz, RawBackend, RawBinding, RawBodyField,
    RawConfig, RawConsent, RawConsumers, RawDelegation, RawIssuer, RawPersonalData, RawProtocol,
    RawRatePer, RawRedis, RawRedisTls, RawRoute, RawSentinel, RawServer, RawService, RawTracing,
    RawUpstream,
};
use super::ConfigError;
use crate::keys::Alg;

/// Where the files a config names are read from (the real file system in
/// `config::load`; an in-memory map in tests).
pub trait FileSource {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fs;

impl FileSource for Fs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// What validation needs to know about where the config lives.
pub struct Context<'a> {
    /// The config file (named in errors).
    pub config_file: &'a Path,
    /// Relative paths in the config are relative to this directory.
    pub base_dir: &'a Path,
    pub files: &'a dyn FileSource,
}

impl Context<'_> {
    /// A path from the config, resolved against the config's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// One access-list file, read and parsed.
#[derive(Debug, Clone)]
pub struct AccessListFile {
    /// As resolved against the config's directory.
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Normalised `0192:<orgnr>` entries.
    pub entries: Vec<String>,
}

/// What validation read and `compile` uses: each access-list file once, in
/// order of first use.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// Each route's parsed path template (`None` where it is invalid).
    pub templates: Vec<Option<PathTemplate>>,
    pub access_lists: Vec<AccessListFile>,
    /// Resolved path -> index in `access_lists`.
    pub access_list_index: HashMap<PathBuf, usize>,
    /// `server.authz.shared_secret_file`, trimmed.
    pub authz_secret: Option<std::sync::Arc<[u8]>>,
    /// `audit.pseudonym_key_file`'s key, trimmed.
    pub pseudonym_key: Option<std::sync::Arc<[u8]>>,
}

/// Checks the whole raw config; every problem found is returned at once.
pub fn validate(raw: &RawConfig, ctx: &Context<'_>) -> Result<Checked, Vec<ConfigError>> {
    let mut v = Validator {
        ctx,
        errors: Vec::new(),
        checked: Checked::default(),
        failed_lists: HashSet::new(),
        has_altinn: raw.altinn.is_some(),
    };
    v.server(&raw.server);
    if let Some(altinn) = &raw.altinn {
        v.altinn(altinn);
    }
    let issuers = v.issuers(&raw.issuers);
    let upstreams = v.upstreams(&raw.upstreams);
    v.routes(raw, &issuers, &upstreams);
    v.state(raw);
    if let Some(service) = &raw.service {
        v.service(service);
    }
    v.audit(&raw.audit);
    if let Some(tracing) = &raw.tracing {
        v.tracing(tracing);
    }
    if v.errors.is_empty() {
        Ok(v.checked)
    } else {
        Err(v.errors)
    }
}

struct Validator<'a, 'c> {
    ctx: &'a Context<'c>,
    errors: Vec<ConfigError>,
    checked: Checked,
    failed_lists: HashSet<PathBuf>,
    /// The file has an `altinn` section (routes may name Altinn access lists).
    has_altinn: bool,
}

/// Name -> index, for names that are unique.
type NameIndex<'r> = HashMap<&'r str, usize>;

impl Validator<'_, '_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.ctx.config_file.to_path_buf(),
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        });
    }

    fn check<T>(&mut self, path: impl FnOnce() -> String, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(path(), message);
                None
            }
        }
    }

    fn readable(&mut self, path: &str, file: &Path) {
        let resolved = self.ctx.resolve(file);
        if let Err(e) = self.ctx.files.read(&resolved) {
            self.error(path, format!("cannot read `{}`: {e}", resolved.display()));
        }
    }

    fn nonzero(&mut self, path: &str, value: Duration) {
        if value.is_zero() {
            self.error(path, "must be greater than zero");
        }
    }

    fn server(&mut self, server: &RawServer) {
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        let mut listener = |v: &mut Self, path: String, text: &str| {
            if let Some(addr) = v.check(|| path.clone(), parse_listen_addr(text)) {
                if addr.port() != 0 {
                    if let Some(first) = seen.get(&addr) {
                        v.error(path, format!("`{addr}` is already used by {first}"));
                    } else {
                        seen.insert(addr, path);
                    }
                }
            }
        };
        for (i, text) in server.listen.iter().enumerate() {
            listener(self, format!("server.listen[{i}]"), text);
        }
        for (i, tls) in server.tls.iter().enumerate() {
            listener(self, format!("server.tls[{i}].listen"), &tls.listen);
            self.readable(&format!("server.tls[{i}].cert"), &tls.cert);
            self.readable(&format!("server.tls[{i}].key"), &tls.key);
            self.alpn(i, &tls.alpn);
        }
        if let Some(admin) = &server.admin_listen {
            listener(self, "server.admin_listen".to_string(), admin);
        }
        if let Some(authz) = &server.authz {
            if let Some(addr) = &authz.listen {
                listener(self, "server.authz.listen".to_string(), addr);
            }
            if let Some(addr) = &authz.grpc_listen {
                listener(self, "server.authz.grpc_listen".to_string(), addr);
            }
            self.authz(authz);
        }
        if server.listen.is_empty() && server.tls.is_empty() {
            self.error(
                "server.listen",
                "no listener: give at least one address in `listen` or `tls`",
            );
        }
        if server.limits.h2_max_concurrent_streams == 0 {
            self.error(
                "server.limits.h2_max_concurrent_streams",
                "must be at least 1",
            );
        }
        if !(1..=MAX_UPSTREAM_POOL).contains(&server.upstream_keepalive_pool_size) {
            self.error(
                "server.upstream_keepalive_pool_size",
                format!("must be between 1 and {MAX_UPSTREAM_POOL}"),
            );
        }
        if server.threads == Some(0) {
            self.error("server.threads", "must be at least 1");
        }
        if server.max_token_bytes == 0 {
            self.error("server.max_token_bytes", "must be at least 1");
        }
        let limits = &server.limits;
        if limits.max_request_header_bytes == 0 {
            self.error(
                "server.limits.max_request_header_bytes",
                "must be at least 1",
            );
        }
        self.nonzero(
            "server.limits.header_read_timeout",
            limits.header_read_timeout.0,
        );
        if limits.max_connections == 0 {
            self.error("server.limits.max_connections", "must be at least 1");
        }
    }

    /// `service:`: texts that are given are non-empty single lines; the
    /// documentation URL is an absolute http(s) URL.
    fn service(&mut self, service: &RawService) {
        for (field, value) in [("name", &service.name), ("contact", &service.contact)] {
            if let Some(value) = value {
                if value.trim().is_empty() {
                    self.error(format!("service.{field}"), "must not be empty");
                } else if value.chars().any(char::is_control) {
                    self.error(
                        format!("service.{field}"),
                        "must be one line of text (no control characters)",
                    );
                }
            }
        }
        if let Some(url) = &service.documentation_url {
            self.check(
                || "service.documentation_url".to_string(),
                check_documentation_url(url),
            );
        }
    }

    /// `audit.pseudonym_key_file`: required by `pseudonymized`, at least 16
    /// bytes (surrounding whitespace trimmed); read here so that its errors
    /// come with every other one.
    fn audit(&mut self, audit: &RawAudit) {
        let Some(file) = &audit.pseudonym_key_file else {
            if audit.personal_data == RawPersonalData::Pseudonymized {
                self.error(
                    "audit.personal_data",
                    "`pseudonymized` needs `audit.pseudonym_key_file`",
                );
            }
            return;
        };
        let path = self.ctx.resolve(file);
        match self.ctx.files.read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let key = text.trim().as_bytes();
                if key.len() < 16 {
                    self.error(
                        "audit.pseudonym_key_file",
                        format!("{}: the key must have at least 16 bytes", path.display()),
                    );
                } else {
                    self.checked.pseudonym_key = Some(std::sync::Arc::from(key));
                }
            }
            Err(e) => self.error(
                "audit.pseudonym_key_file",
                format!("cannot read {}: {e}", path.display()),
            ),
        }
    }

    /// `tracing:`: an endpoint, an http(s) URL; a queue of at least one span.
    fn tracing(&mut self, tracing: &RawTracing) {
        match &tracing.otlp_endpoint {
            None => self.error(
                "tracing.otlp_endpoint",
                "missing: give the collector's OTLP/HTTP URL (e.g. http://collector:4318), \
                 or leave `tracing` out",
            ),
            Some(url) => {
                self.check(
                    || "tracing.otlp_endpoint".to_string(),
                    check_otlp_endpoint(url),
                );
            }
        }
        if tracing.queue_spans == 0 {
            self.error("tracing.queue_spans", "must be at least 1");
        }
    }

    /// `server.authz` beyond its addresses: a listener at all, the
    /// `path_prefix` shape, and a secret that can travel in a header.
    fn authz(&mut self, authz: &RawAuthz) {
        if authz.listen.is_none() && authz.grpc_listen.is_none() {
            self.error(
                "server.authz",
                "no listener: give `listen` (HTTP) or `grpc_listen` (gRPC), or both",
            );
        }
        if let Some(prefix) = &authz.path_prefix {
            if let Err(message) = parse_path_prefix(prefix) {
                self.error("server.authz.path_prefix", message);
            }
        }
        let Some(file) = &authz.shared_secret_file else {
            return;
        };
        let resolved = self.ctx.resolve(file);
        let path = "server.authz.shared_secret_file";
        match self.ctx.files.read(&resolved) {
            Err(e) => self.error(path, format!("cannot read `{}`: {e}", resolved.display())),
            Ok(bytes) => match parse_shared_secret(&bytes) {
                Ok(secret) => self.checked.authz_secret = Some(secret),
                Err(message) => self.error(path, format!("`{}`: {message}", resolved.display())),
            },
        }
    }

    /// Unique, non-empty names; returns name -> first index.
    fn names<'r>(
        &mut self,
        section: &str,
        kind: &str,
        names: impl Iterator<Item = &'r str>,
    ) -> NameIndex<'r> {
        let mut index: NameIndex<'r> = HashMap::new();
        for (i, name) in names.enumerate() {
            let path = format!("{section}[{i}].name");
            if name.trim().is_empty() {
                self.error(path, "must not be empty");
                continue;
            }
            if let Some(first) = index.get(name) {
                self.error(
                    path,
                    format!("duplicate {kind} name `{name}` (first at {section}[{first}])"),
                );
            } else {
                index.insert(name, i);
            }
        }
        index
    }

    fn issuers<'r>(&mut self, issuers: &'r [RawIssuer]) -> NameIndex<'r> {
        let index = self.names("issuers", "issuer", issuers.iter().map(|i| i.name.as_str()));
        for (i, issuer) in issuers.iter().enumerate() {
            let at = |field: &str| format!("issuers[{i}].{field}");
            if issuer.issuer.trim().is_empty() {
                self.error(at("issuer"), "must not be empty");
            }
            match (&issuer.jwks_uri, &issuer.jwks_file) {
                (Some(uri), None) => {
                    self.check(|| at("jwks_uri"), check_jwks_uri(uri));
                }
                (None, Some(file)) => {
                    self.readable(&at("jwks_file"), file);
                    if issuer.ca_file.is_some() {
                        self.error(at("ca_file"), "has no effect with `jwks_file`");
                    }
                }
                _ => self.error(
                    format!("issuers[{i}]"),
                    "give exactly one of `jwks_uri` (fetched over https) and `jwks_file` (read from disk)",
                ),
            }
            if let Some(ca) = &issuer.ca_file {
                self.readable(&at("ca_file"), ca);
            }
            if issuer.algorithms.is_empty() {
                self.error(at("algorithms"), "must not be empty (default [RS256])");
            }
            for (j, alg) in issuer.algorithms.iter().enumerate() {
                self.check(|| at(&format!("algorithms[{j}]")), parse_algorithm(alg));
            }
            for (j, aud) in issuer.audiences.iter().enumerate() {
                if aud.trim().is_empty() {
                    self.error(at(&format!("audiences[{j}]")), "must not be empty");
                }
            }
            if issuer.leeway.0 > MAX_LEEWAY {
                self.error(
                    at("leeway"),
                    "must be at most 5m: the leeway extends every token's `exp` and every consent's `validTo` by as much",
                );
            }
            self.nonzero(&at("jwks_refresh"), issuer.jwks_refresh.0);
            if issuer.jwks_max_stale.0 <= issuer.jwks_refresh.0 {
                self.error(
                    at("jwks_max_stale"),
                    "must be longer than `jwks_refresh` (ideally several times), or good keys would expire during every refresh",
                );
            }
            if let Some(lifetime) = issuer.max_token_lifetime {
                self.nonzero(&at("max_token_lifetime"), lifetime.0);
            }
        }
        index
    }

    /// `server.tls[i].alpn`: a non-empty list of distinct protocols.
    fn alpn(&mut self, i: usize, alpn: &[RawAlpn]) {
        let at = format!("server.tls[{i}].alpn");
        if alpn.is_empty() {
            self.error(at, "must not be empty: list `h2`, `http/1.1` or both");
        } else if alpn.len() == 2 && alpn[0] == alpn[1] {
            self.error(at, "lists one protocol twice");
        } else if alpn == [RawAlpn::Http11, RawAlpn::H2] {
            // pingora offers h2 first when it offers both.
            self.error(
                at,
                "`h2` is preferred when both are offered: write `[h2, http/1.1]`",
            );
        }
    }

    /// `upstreams[i].protocol` against `tls`: h2 is negotiated by ALPN over
    /// TLS, h2c is prior knowledge over cleartext.
    fn upstream_protocol(&mut self, i: usize, upstream: &RawUpstream) {
        let at = format!("upstreams[{i}].protocol");
        match (upstream.protocol, upstream.tls) {
            (RawProtocol::H2, false) => self.error(
                at,
                "`h2` needs `tls: true` (HTTP/2 over TLS); use `h2c` for cleartext HTTP/2",
            ),
            (RawProtocol::H2c, true) => {
                self.error(at, "`h2c` is cleartext HTTP/2: use `h2` with `tls: true`")
            }
            _ => {}
        }
    }

    fn upstreams<'r>(&mut self, upstreams: &'r [RawUpstream]) -> NameIndex<'r> {
        let index = self.names(
            "upstreams",
            "upstream",
            upstreams.iter().map(|u| u.name.as_str()),
        );
        for (i, upstream) in upstreams.iter().enumerate() {
            let at = |field: &str| format!("upstreams[{i}].{field}");
            if upstream.targets.is_empty() {
                self.error(
                    at("targets"),
                    "must not be empty: give at least one host:port",
                );
            }
            for (j, target) in upstream.targets.iter().enumerate() {
                self.check(
                    || at(&format!("targets[{j}]")),
                    check_upstream_target(target),
                );
            }
            if let Some(sni) = &upstream.sni {
                if !upstream.tls {
                    self.error(at("sni"), "`sni` is only used with `tls: true`");
                } else {
                    self.check(|| at("sni"), check_hostname(sni));
                }
            }
            if let Some(ca) = &upstream.ca_file {
                if !upstream.tls {
                    self.error(at("ca_file"), "`ca_file` is only used with `tls: true`");
                }
                self.readable(&at("ca_file"), ca);
            }
            self.upstream_protocol(i, upstream);
            self.nonzero(&at("connect_timeout"), upstream.connect_timeout.0);
            self.nonzero(&at("read_timeout"), upstream.read_timeout.0);
            if let Some(health) = &upstream.health_check {
                if !health.path.starts_with('/') {
                    self.error(at("health_check.path"), "must start with `/`");
                }
                self.nonzero(&at("health_check.interval"), health.interval.0);
            }
        }
        index
    }

    fn routes(&mut self, raw: &RawConfig, issuers: &NameIndex<'_>, upstreams: &NameIndex<'_>) {
        self.names(
            "routes",
            "route",
            raw.routes.iter().map(|r| r.name.as_str()),
        );
        // Routes of one host + path template form a method group: disjoint
        // `methods`, none "any" (SPEC section 13, "Routes").
        let mut groups: HashMap<(Option<String>, String), Vec<usize>> = HashMap::new();
        for (i, route) in raw.routes.iter().enumerate() {
            if route.name == "-" {
                self.error(
                    format!("routes[{i}].name"),
                    "`-` is reserved (the `route` label of requests refused before routing)",
                );
            }
            let template = self.route_match(i, route);
            self.checked.templates.push(template.clone());
            if let Some(template) = &template {
                let host = route.host.as_ref().map(|h| h.to_ascii_lowercase());
                let members = groups.entry((host, template.shape())).or_default();
                if let Some(message) = method_overlap(raw, members, route) {
                    self.error(format!("routes[{i}].methods"), message);
                }
                members.push(i);
            }
            if !upstreams.contains_key(route.upstream.as_str()) {
                let known = known_names(raw.upstreams.iter().map(|u| u.name.as_str()));
                self.error(
                    format!("routes[{i}].upstream"),
                    format!("unknown upstream `{}`{known}", route.upstream),
                );
            }
            self.route_auth(i, route, raw, issuers, template.as_ref());
            self.route_state(i, route);
            self.route_grpc(i, route, raw);
        }
    }

    /// `grpc: true` (SPEC section 13): gRPC needs HTTP/2 to the upstream
    /// (its status travels in trailers) and its body is length-prefixed
    /// protobuf, which no body binding reads.
    fn route_grpc(&mut self, i: usize, route: &RawRoute, raw: &RawConfig) {
        if !route.grpc {
            return;
        }
        let at = format!("routes[{i}].grpc");
        let upstream = raw.upstreams.iter().find(|u| u.name == route.upstream);
        if upstream.is_some_and(|u| u.protocol == RawProtocol::H1) {
            self.error(
                at.clone(),
                format!(
                    "gRPC needs HTTP/2 to the upstream: give upstream `{}` `protocol: h2` or `h2c`",
                    route.upstream
                ),
            );
        }
        if route.reads_body() {
            self.error(
                at,
                "a gRPC body is length-prefixed protobuf: bind the subject and metadata to \
                 headers (gRPC metadata), not to the body",
            );
        }
    }

    /// `consent.one_time` and `rate_limit` of one route (SPEC section 13).
    fn route_state(&mut self, i: usize, route: &RawRoute) {
        let Some(limit) = &route.rate_limit else {
            return;
        };
        let path = format!("routes[{i}].rate_limit");
        if route.auth == RawAuth::None {
            self.error(
                &path,
                "needs `auth: token` or `auth: consent`: it counts per consumer",
            );
        }
        if limit.per == RawRatePer::ConsumerAndSubject && route.auth != RawAuth::Consent {
            self.error(
                format!("{path}.per"),
                "`consumer_and_subject` needs `auth: consent` (the subject is the consent's)",
            );
        }
        if limit.requests == 0 {
            self.error(format!("{path}.requests"), "must be at least 1");
        }
        let period = limit.period.0;
        if period.is_zero() {
            self.error(format!("{path}.period"), "must be greater than zero");
        } else if period < Duration::from_millis(1) || period > Duration::from_secs(24 * 60 * 60) {
            self.error(format!("{path}.period"), "must be between 1ms and 24h");
        }
        if limit.requests.saturating_add(limit.burst) > 1_000_000 {
            self.error(&path, "`requests` + `burst` must be at most 1000000");
        }
    }

    /// `state:`: the store of one-time consents and rate limits.
    fn state(&mut self, raw: &RawConfig) {
        let state = &raw.state;
        match (state.backend, &state.redis) {
            (RawBackend::Memory, Some(_)) => self.error(
                "state.redis",
                "set only with `backend: redis` (the backend is `memory`)",
            ),
            (RawBackend::Redis, None) => self.error(
                "state.redis",
                "`backend: redis` needs `redis: { url: ... }`",
            ),
            (RawBackend::Redis, Some(redis)) => self.redis(redis),
            (RawBackend::Memory, None) => {}
        }
    }

    /// `state.redis`: exactly one of `url`, `sentinel`, `cluster`; TLS
    /// settings only with `rediss://`.
    fn redis(&mut self, redis: &RawRedis) {
        let given = [
            redis.url.is_some(),
            redis.sentinel.is_some(),
            redis.cluster.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            self.error(
                "state.redis",
                "give exactly one of `url` (standalone), `sentinel` or `cluster`",
            );
        }
        let mut urls: Vec<(String, &str)> = Vec::new();
        if let Some(url) = &redis.url {
            urls.push(("state.redis.url".into(), url));
        }
        if let Some(sentinel) = &redis.sentinel {
            self.sentinel(sentinel, &mut urls);
        }
        if let Some(cluster) = &redis.cluster {
            if cluster.urls.is_empty() {
                self.error("state.redis.cluster.urls", "must list at least one node");
            }
            let all_valid = cluster.urls.iter().all(|u| check_redis_url(u).is_ok());
            if all_valid && !cluster.urls.is_empty() {
                let urls = cluster.urls.iter().map(String::as_str);
                if let Err(e) = redis::cluster::ClusterClientBuilder::new(urls).build() {
                    self.error(
                        "state.redis.cluster.urls",
                        e.detail().unwrap_or("not usable together").to_string(),
                    );
                }
            }
            for (i, url) in cluster.urls.iter().enumerate() {
                let path = format!("state.redis.cluster.urls[{i}]");
                if check_redis_url(url).is_ok() && redis_db(url) != 0 {
                    self.error(&path, "a Redis Cluster has database 0 only");
                }
                urls.push((path, url));
            }
        }
        for (path, url) in &urls {
            if let Err(message) = check_redis_url(url) {
                self.error(path, message);
            }
        }
        let tls = urls
            .iter()
            .filter(|(_, u)| u.starts_with("rediss://"))
            .count();
        if tls != 0 && tls != urls.len() {
            self.error(
                "state.redis",
                "mixes `redis://` and `rediss://`: TLS is on for all servers or for none",
            );
        }
        if let Some(t) = &redis.tls {
            self.redis_tls(t, tls != 0);
        }
        if redis.wait_for_replicas > 0 && redis.cluster.is_some() {
            self.error(
                "state.redis.wait_for_replicas",
                "is for standalone and Sentinel; in a Cluster set `min-replicas-to-write` on the nodes",
            );
        }
        if redis.wait_for_replicas > 16 {
            self.error("state.redis.wait_for_replicas", "must be at most 16");
        }
        self.nonzero("state.redis.timeout", redis.timeout.0);
        if redis.timeout.0 > Duration::from_secs(5) {
            self.error(
                "state.redis.timeout",
                "must be at most 5s: every request on a one-time or rate-limited route waits on it",
            );
        }
        if redis
            .key_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            self.error(
                "state.redis.key_prefix",
                "must not contain spaces or control characters",
            );
        }
    }

    fn sentinel<'r>(&mut self, sentinel: &'r RawSentinel, urls: &mut Vec<(String, &'r str)>) {
        let name = &sentinel.master_name;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(
                "state.redis.sentinel.master_name",
                "must be the name the sentinels monitor (`sentinel monitor <name> ...`)",
            );
        }
        if sentinel.urls.is_empty() {
            self.error(
                "state.redis.sentinel.urls",
                "must list at least one sentinel",
            );
        }
        if sentinel.db < 0 {
            self.error("state.redis.sentinel.db", "must be 0 or more");
        }
        if sentinel.username.is_some() && sentinel.password.is_none() {
            self.error("state.redis.sentinel.username", "needs `password`");
        }
        for (i, url) in sentinel.urls.iter().enumerate() {
            urls.push((format!("state.redis.sentinel.urls[{i}]"), url));
        }
        // The client logs in to every sentinel alike.
        let logins: HashSet<_> = sentinel
            .urls
            .iter()
            .filter_map(|u| redis::IntoConnectionInfo::into_connection_info(u.as_str()).ok())
            .map(|i| {
                let r = i.redis_settings();
                (
                    r.username().map(str::to_owned),
                    r.password().map(str::to_owned),
                )
            })
            .collect();
        if logins.len() > 1 {
            self.error(
                "state.redis.sentinel.urls",
                "the sentinels must share one user and password",
            );
        }
    }

    fn redis_tls(&mut self, tls: &RawRedisTls, rediss: bool) {
        if !rediss {
            self.error(
                "state.redis.tls",
                "is only used with `rediss://` URLs (TLS); these say `redis://`",
            );
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            self.error(
                "state.redis.tls",
                "`cert_file` and `key_file` (a client certificate) go together",
            );
        }
        let files = [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ];
        for (field, file) in files {
            if let Some(file) = file {
                self.readable(&format!("state.redis.tls.{field}"), file);
            }
        }
    }

    /// host, path, methods, strip_prefix; returns the parsed template.
    fn route_match(&mut self, i: usize, route: &RawRoute) -> Option<PathTemplate> {
        let at = |field: &str| format!("routes[{i}].{field}");
        if let Some(host) = &route.host {
            self.check(|| at("host"), check_host_pattern(host));
        }
        let template = self.check(|| at("path"), PathTemplate::parse(&route.path));
        if let Some(methods) = &route.methods {
            if methods.is_empty() {
                self.error(
                    at("methods"),
                    "must not be empty (omit `methods` to allow any)",
                );
            }
            for (j, method) in methods.iter().enumerate() {
                self.check(|| at(&format!("methods[{j}]")), check_method(method));
            }
        }
        self.body_limits(i, route);
        if let (Some(prefix), Some(template)) = (&route.strip_prefix, &template) {
            self.check(|| at("strip_prefix"), check_strip_prefix(prefix, template));
        }
        template
    }

    /// `max_body_bytes` only where a binding reads the body, within
    /// pingora's replay buffer; one kind of body per route.
    fn body_limits(&mut self, i: usize, route: &RawRoute) {
        let at = |field: &str| format!("routes[{i}].{field}");
        let fields: Vec<&RawBodyField> = route
            .consent
            .iter()
            .flat_map(|c| {
                c.subject.iter().filter_map(|s| s.body.as_ref()).chain(
                    c.metadata
                        .matches
                        .0
                        .iter()
                        .filter_map(|(_, b)| b.body.as_ref()),
                )
            })
            .collect();
        // A field naming both is reported on its own.
        let json = fields
            .iter()
            .any(|f| f.json_pointer.is_some() && f.form_field.is_none());
        let form = fields
            .iter()
            .any(|f| f.form_field.is_some() && f.json_pointer.is_none());
        if json && form {
            self.error(
                at("consent"),
                "bindings read the body both as JSON (`json_pointer`) and as a form (`form_field`); one body has one type",
            );
        }
        match route.max_body_bytes {
            Some(_) if fields.is_empty() => self.error(
                at("max_body_bytes"),
                "has no effect: no `subject` or `metadata.match` binding reads the body",
            ),
            Some(n) if n == 0 || n > MAX_BODY_BYTES as u64 => self.error(
                at("max_body_bytes"),
                format!(
                    "must be 1 to {MAX_BODY_BYTES} (the most the gateway can buffer and replay)"
                ),
            ),
            _ => {}
        }
    }

    fn route_auth(
        &mut self,
        i: usize,
        route: &RawRoute,
        raw: &RawConfig,
        issuers: &NameIndex<'_>,
        template: Option<&PathTemplate>,
    ) {
        let at = |field: &str| format!("routes[{i}].{field}");
        if route.auth == RawAuth::None {
            let ignored = [
                ("issuers", route.issuers.is_some()),
                ("scopes", route.scopes.is_some()),
                ("delegation", route.delegation.is_some()),
                ("consumers", route.consumers.is_some()),
            ];
            for (field, present) in ignored {
                if present {
                    self.error(
                        at(field),
                        format!(
                            "`{field}` has no effect with `auth: none`; remove it or change `auth`"
                        ),
                    );
                }
            }
        } else {
            match &route.issuers {
                None => self.error(at("issuers"), "required unless `auth: none`"),
                Some(list) if list.is_empty() => {
                    self.error(at("issuers"), "must not be empty unless `auth: none`")
                }
                Some(list) => self.route_issuers(i, list, raw, issuers),
            }
        }
        if let Some(scopes) = &route.scopes {
            for (kind, list) in [("all", &scopes.all), ("any", &scopes.any)] {
                for (j, scope) in list.iter().enumerate() {
                    if scope.is_empty() || scope.chars().any(char::is_whitespace) {
                        self.error(
                            at(&format!("scopes.{kind}[{j}]")),
                            "a scope must be one non-empty word without spaces",
                        );
                    }
                }
            }
        }
        if let Some(delegation) = &route.delegation {
            self.delegation(i, delegation);
        }
        if let Some(consumers) = &route.consumers {
            self.consumers(i, consumers);
        }
        match (&route.consent, route.auth) {
            (None, RawAuth::Consent) => {
                self.error(at("consent"), "`auth: consent` needs a `consent` block")
            }
            (Some(_), RawAuth::Token | RawAuth::None) => {
                let auth = if route.auth == RawAuth::Token {
                    "token"
                } else {
                    "none"
                };
                self.error(
                    at("consent"),
                    format!("`consent` is only enforced with `auth: consent`, and this route has `auth: {auth}`"),
                );
            }
            (Some(consent), RawAuth::Consent) => self.consent(i, consent, template),
            (None, _) => {}
        }
    }

    fn route_issuers(
        &mut self,
        i: usize,
        list: &[String],
        raw: &RawConfig,
        issuers: &NameIndex<'_>,
    ) {
        let mut seen_names: HashSet<&str> = HashSet::new();
        let mut seen_iss: HashMap<&str, &str> = HashMap::new();
        for (j, name) in list.iter().enumerate() {
            let path = format!("routes[{i}].issuers[{j}]");
            let Some(&index) = issuers.get(name.as_str()) else {
                let known = known_names(raw.issuers.iter().map(|x| x.name.as_str()));
                self.error(path, format!("unknown issuer `{name}`{known}"));
                continue;
            };
            if !seen_names.insert(name) {
                self.error(path, format!("issuer `{name}` is listed twice"));
                continue;
            }
            let iss = raw.issuers[index].issuer.as_str();
            if let Some(other) = seen_iss.insert(iss, name) {
                self.error(
                    path,
                    format!("issuers `{other}` and `{name}` have the same `issuer` value `{iss}`: which one verifies a token would be ambiguous"),
                );
            }
        }
    }

    fn delegation(&mut self, i: usize, delegation: &RawDelegation) {
        if !delegation.allow && !delegation.suppliers.is_empty() {
            self.error(
                format!("routes[{i}].delegation.suppliers"),
                "has no effect with `allow: false` (no supplier is allowed)",
            );
        }
        for (j, entry) in delegation.suppliers.iter().enumerate() {
            self.check(
                || format!("routes[{i}].delegation.suppliers[{j}]"),
                normalize_org_entry(entry).map_err(|e| e.to_string()),
            );
        }
    }

    fn consumers(&mut self, i: usize, consumers: &RawConsumers) {
        if consumers.allow.is_none()
            && consumers.file.is_none()
            && consumers.altinn_access_lists.is_none()
        {
            self.error(
                format!("routes[{i}].consumers"),
                "give `allow`, `file` or `altinn_access_lists` (an access list with none admits nobody)",
            );
        }
        if let Some(lists) = &consumers.altinn_access_lists {
            self.altinn_access_lists(i, lists);
        }
        for (j, entry) in consumers.allow.iter().flatten().enumerate() {
            self.check(
                || format!("routes[{i}].consumers.allow[{j}]"),
                normalize_org_entry(entry).map_err(|e| e.to_string()),
            );
        }
        if let Some(file) = &consumers.file {
            self.access_list(&format!("routes[{i}].consumers.file"), file);
        }
    }

    /// `routes[i].consumers.altinn_access_lists`: needs the `altinn` section;
    /// owner and identifier as the Resource Registry writes them; each once.
    fn altinn_access_lists(&mut self, i: usize, lists: &[super::raw::RawAltinnAccessList]) {
        let path = format!("routes[{i}].consumers.altinn_access_lists");
        if !self.has_altinn {
            self.error(
                path.clone(),
                "needs the top-level `altinn` section (where the lists are synced from)",
            );
        }
        if lists.is_empty() {
            self.error(
                path.clone(),
                "must not be empty (remove it, or name at least one list)",
            );
        }
        let mut seen = HashSet::new();
        for (j, list) in lists.iter().enumerate() {
            self.check(
                || format!("{path}[{j}].owner"),
                check_registry_name(&list.owner),
            );
            self.check(
                || format!("{path}[{j}].identifier"),
                check_registry_name(&list.identifier),
            );
            if !seen.insert((&list.owner, &list.identifier)) {
                self.error(
                    format!("{path}[{j}]"),
                    format!("`{}/{}` is listed twice", list.owner, list.identifier),
                );
            }
        }
    }

    /// The `altinn` section: URLs, the Maskinporten client and its key, timings.
    fn altinn(&mut self, altinn: &RawAltinn) {
        for (field, url) in [
            ("platform_url", &altinn.platform_url),
            ("maskinporten_url", &altinn.maskinporten_url),
        ] {
            if let Some(url) = url {
                self.check(|| format!("altinn.{field}"), check_altinn_url(url));
            }
        }
        let mp = &altinn.maskinporten;
        for (field, value) in [("client_id", &mp.client_id), ("kid", &mp.kid)] {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                self.error(
                    format!("altinn.maskinporten.{field}"),
                    "must be a non-empty value without control characters",
                );
            }
        }
        if mp.scopes.is_empty() {
            self.error("altinn.maskinporten.scopes", "must not be empty");
        }
        for (j, scope) in mp.scopes.iter().enumerate() {
            if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    format!("altinn.maskinporten.scopes[{j}]"),
                    "a scope must be one non-empty word without spaces",
                );
            }
        }
        let key = self.ctx.resolve(&mp.key_file);
        match self.ctx.files.read(&key) {
            Err(e) => self.error(
                "altinn.maskinporten.key_file",
                format!("cannot read `{}`: {e}", key.display()),
            ),
            Ok(pem) => {
                // The key itself never appears in an error: only whether it parses.
                if jsonwebtoken::EncodingKey::from_rsa_pem(&pem).is_err() {
                    self.error(
                        "altinn.maskinporten.key_file",
                        format!(
                            "`{}` is not an RSA private key in PKCS#1 or PKCS#8 PEM",
                            key.display()
                        ),
                    );
                }
            }
        }
        self.nonzero("altinn.refresh", altinn.refresh.0);
        self.nonzero("altinn.timeout", altinn.timeout.0);
        if altinn.max_stale.0 <= altinn.refresh.0 {
            self.error(
                "altinn.max_stale",
                "must be longer than `refresh` (otherwise one late sync makes every list unavailable)",
            );
        }
    }

    /// Reads and parses an access-list file once, however many routes name it.
    fn access_list(&mut self, path: &str, file: &Path) {
        let resolved = self.ctx.resolve(file);
        if self.checked.access_list_index.contains_key(&resolved) {
            return;
        }
        if self.failed_lists.contains(&resolved) {
            self.error(
                path,
                format!(
                    "access list `{}` has errors (reported above)",
                    resolved.display()
                ),
            );
            return;
        }
        let bytes = match self.ctx.files.read(&resolved) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.error(
                    path,
                    format!("cannot read access list `{}`: {e}", resolved.display()),
                );
                self.failed_lists.insert(resolved);
                return;
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            self.error(
                path,
                format!("access list `{}` is not UTF-8 text", resolved.display()),
            );
            self.failed_lists.insert(resolved);
            return;
        };
        match orgno::parse_access_list(text) {
            Ok(entries) => {
                let index = self.checked.access_lists.len();
                self.checked
                    .access_list_index
                    .insert(resolved.clone(), index);
                self.checked.access_lists.push(AccessListFile {
                    path: resolved,
                    bytes,
                    entries,
                });
            }
            Err(line_errors) => {
                for line_error in line_errors {
                    self.errors.push(ConfigError {
                        file: resolved.clone(),
                        line: Some(line_error.line),
                        column: None,
                        path: path.to_string(),
                        message: line_error.error.to_string(),
                    });
                }
                self.failed_lists.insert(resolved);
            }
        }
    }

    fn consent(&mut self, i: usize, consent: &RawConsent, template: Option<&PathTemplate>) {
        let at = |field: &str| format!("routes[{i}].consent.{field}");
        if consent.resources.is_empty() {
            self.error(
                at("resources"),
                "must not be empty: name the consent resource(s)",
            );
        }
        for (j, resource) in consent.resources.iter().enumerate() {
            if resource.trim().is_empty() {
                self.error(at(&format!("resources[{j}]")), "must not be empty");
            }
        }
        if consent.actions.is_empty() {
            self.error(
                at("actions"),
                "must not be empty (omit it for the default [consent])",
            );
        }
        for (j, action) in consent.actions.iter().enumerate() {
            if action.trim().is_empty() {
                self.error(at(&format!("actions[{j}]")), "must not be empty");
            }
        }
        if let Some(subject) = &consent.subject {
            let binding = RawBinding {
                path_param: subject.path_param.clone(),
                header: subject.header.clone(),
                query: subject.query.clone(),
                body: subject.body.clone(),
            };
            self.binding(&at("subject"), &binding, template);
            if subject.types.is_empty() {
                self.error(at("subject.types"), "must not be empty (default: both)");
            }
        }
        for (j, key) in consent.metadata.required.iter().enumerate() {
            if key.trim().is_empty() {
                self.error(at(&format!("metadata.required[{j}]")), "must not be empty");
            }
        }
        let mut seen: HashMap<String, &str> = HashMap::new();
        for (key, binding) in &consent.metadata.matches.0 {
            let path = at(&format!("metadata.match.{key}"));
            if key.trim().is_empty() {
                self.error(path.clone(), "a metadata key must not be empty");
            }
            if let Some(other) = seen.insert(key.to_lowercase(), key) {
                self.error(
                    path.clone(),
                    format!("`{key}` and `{other}` are the same key (metadata keys compare case-insensitively)"),
                );
            }
            self.binding(&path, binding, template);
        }
    }

    /// Exactly one of `path_param`, `header`, `query`, each well-formed.
    fn binding(&mut self, path: &str, binding: &RawBinding, template: Option<&PathTemplate>) {
        let given = [
            binding.path_param.is_some(),
            binding.header.is_some(),
            binding.query.is_some(),
            binding.body.is_some(),
        ]
        .into_iter()
        .filter(|g| *g)
        .count();
        if given != 1 {
            self.error(
                path,
                format!(
                    "name exactly one of `path_param`, `header`, `query`, `body` (found {given})"
                ),
            );
            return;
        }
        if let Some(body) = &binding.body {
            self.check(|| format!("{path}.body"), check_body_field(body));
        }
        if let Some(param) = &binding.path_param {
            if let Some(template) = template {
                if !template.params.iter().any(|p| p == param) {
                    self.error(
                        format!("{path}.path_param"),
                        format!(
                            "path param `{param}` is not in the route's path `{}`",
                            template.text
                        ),
                    );
                }
            }
        }
        if let Some(header) = &binding.header {
            self.check(|| format!("{path}.header"), check_binding_header(header));
        }
        if let Some(query) = &binding.query {
            if query.is_empty() {
                self.error(format!("{path}.query"), "must not be empty");
            } else if query == "access_token" {
                self.error(
                    format!("{path}.query"),
                    "`access_token` in the query is always refused (invalid_request)",
                );
            }
        }
    }
}

/// The longest clock-skew leeway an issuer may have: a longer one (`30m`
/// for `30s`) would silently keep expired tokens and consents valid.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// The largest `server.upstream_keepalive_pool_size` (idle connections).
const MAX_UPSTREAM_POOL: usize = 65_536;

/// `; defined: a, b` for an unknown-name message (only when the list is short).
fn known_names<'r>(names: impl Iterator<Item = &'r str>) -> String {
    let names: Vec<&str> = names.take(11).collect();
    if names.is_empty() {
        "; none is defined".to_string()
    } else if names.len() <= 10 {
        format!("; defined: {}", names.join(", "))
    } else {
        String::new()
    }
}

/// `server.authz.path_prefix`: `/`-led, no query, no trailing `/` (as
/// Envoy's `path_prefix`); returned as given.
pub fn parse_path_prefix(text: &str) -> Result<&str, String> {
    let visible = text.bytes().all(|b| b.is_ascii_graphic());
    if !text.starts_with('/') || text.len() < 2 || text.ends_with('/') || !visible {
        return Err("must start with `/`, not end with `/`, and be visible ASCII".into());
    }
    if text.contains(['?', '#']) {
        return Err("must be a path, without `?` or `#`".into());
    }
    Ok(text)
}

/// The content of `server.authz.shared_secret_file`: surrounding whitespace
/// trimmed, at least 16 bytes, visible ASCII (it travels in a header).
pub fn parse_shared_secret(bytes: &[u8]) -> Result<std::sync::Arc<[u8]>, String> {
    let secret = bytes.trim_ascii();
    if secret.len() < 16 {
        return Err("the secret must have at least 16 bytes".into());
    }
    if !secret.iter().all(u8::is_ascii_graphic) {
        return Err("the secret must be visible ASCII (it is sent as a header value)".into());
    }
    Ok(std::sync::Arc::from(secret))
}

/// A listener address: `ip:port` (IPv6 as `[::1]:8080`); port 0 picks a free port.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    SocketAddr::from_str(text)
        .map_err(|_| format!("`{text}` is not an ip:port address (e.g. 0.0.0.0:8080 or [::]:8080)"))
}

/// An upstream target: `host:port`, host an IP (IPv6 in brackets) or a DNS
/// name, port 1-65535. Checked for shape only (no DNS lookup).
pub fn check_upstream_target(text: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{text}` is not a host:port target: {why}"));
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, port)) = rest.split_once("]:") else {
            return bad("an IPv6 address is written [addr]:port");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("invalid IPv6 address");
        }
        (None, port)
    } else {
        let Some((host, port)) = text.rsplit_once(':') else {
            return bad("the port is missing");
        };
        if host.contains(':') {
            return bad("an IPv6 address is written [addr]:port");
        }
        (Some(host), port)
    };
    match port.parse::<u16>() {
        Ok(0) => return bad("port 0 is not a target port"),
        Ok(_) if port.bytes().all(|b| b.is_ascii_digit()) => {}
        _ => return bad("the port must be a number 1-65535"),
    }
    if let Some(host) = host {
        if host.parse::<Ipv4Addr>().is_err() {
            check_hostname(host)
                .map_err(|why| format!("`{text}` is not a host:port target: {why}"))?;
        }
    }
    Ok(())
}

/// A DNS host name (letters, digits, `-`; labels of 1-63; at most 253 in
/// all; the last label not all digits, so a mistyped IPv4 is no name).
pub fn check_hostname(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host name is empty".to_string());
    }
    if host.len() > 253 {
        return Err(format!("`{host}` is longer than 253 characters"));
    }
    for label in host.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty() || bytes.len() > 63 {
            return Err(format!("`{host}` has an empty or over-long label"));
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            || bytes[0] == b'-'
            || bytes[bytes.len() - 1] == b'-'
        {
            return Err(format!(
                "`{host}` is not a valid host name (letters, digits and inner `-` only)"
            ));
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
        && host.parse::<Ipv4Addr>().is_err()
    {
        return Err(format!(
            "`{host}` is neither a valid IPv4 address nor a host name"
        ));
    }
    Ok(())
}

/// A route's `host`: an exact host name or `*.` followed by one; no port.
pub fn check_host_pattern(pattern: &str) -> Result<(), String> {
    if let Some((_, port)) = pattern.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`{pattern}`: the host is compared without its port; remove `:{port}`"
            ));
        }
    }
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    if name.contains('*') {
        return Err(format!(
            "`{pattern}`: a wildcard is only allowed as a leading `*.` (e.g. *.example.no)"
        ));
    }
    check_hostname(name)
}

impl PathTemplate {
    /// Checks a template: starts with `/`; segments are literals, `{param}`
    /// or a final `{*rest}`; names unique; no empty (except a trailing
    /// slash), `.` or `..` segment and nothing the gateway's path
    /// normalisation would change or refuse (so the template can match).
    /// Confirmed by inserting it into a `matchit::Router`.
    pub fn parse(text: &str) -> Result<PathTemplate, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("`{text}` must start with `/`"));
        };
        if let Some(c) = text
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '\\'))
        {
            return Err(format!(
                "`{text}` contains {c:?}, which a normalised request path never has"
            ));
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let mut params: Vec<String> = Vec::new();
        let mut literal_prefix = Vec::new();
        let last = segments.len() - 1;
        for (n, segment) in segments.iter().enumerate() {
            if segment.is_empty() {
                if n == last {
                    continue;
                }
                return Err(format!(
                    "`{text}` has an empty segment (`//`), which a normalised request path never has"
                ));
            }
            if *segment == "." || *segment == ".." {
                return Err(format!("`{text}` has a `{segment}` segment"));
            }
            if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let (name, catch_all) = match inner.strip_prefix('*') {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                if catch_all && n != last {
                    return Err(format!(
                        "`{text}`: the catch-all `{{*{name}}}` must be the last segment"
                    ));
                }
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!(
                        "`{text}`: `{{{inner}}}` is not a valid parameter (letters, digits, `_`, `-`)"
                    ));
                }
                if params.iter().any(|p| p == name) {
                    return Err(format!("`{text}`: parameter `{name}` appears twice"));
                }
                params.push(name.to_string());
                continue;
            }
            if segment.contains(['{', '}', '*']) {
                return Err(format!(
                    "`{text}`: segment `{segment}` mixes text and braces; a parameter is a whole segment `{{name}}`"
                ));
            }
            check_percent_escapes(text, segment)?;
            if params.is_empty() {
                literal_prefix.push((*segment).to_string());
            }
        }
        let mut router = matchit::Router::new();
        router
            .insert(text, ())
            .map_err(|e| format!("`{text}` is not a valid path template: {e}"))?;
        Ok(PathTemplate {
            text: text.to_string(),
            params,
            literal_prefix,
        })
    }

    /// The template with parameter names erased: two templates with one
    /// shape match exactly the same paths.
    pub fn shape(&self) -> String {
        let mut shape = String::with_capacity(self.text.len());
        for (n, segment) in self.text.split('/').enumerate() {
            if n > 0 {
                shape.push('/');
            }
            if segment.starts_with("{*") {
                shape.push_str("{*}");
            } else if segment.starts_with('{') {
                shape.push_str("{}");
            } else {
                shape.push_str(segment);
            }
        }
        shape
    }
}

/// `%XX` escapes in a literal segment: well-formed, and not ones the
/// gateway's normalisation decodes (unreserved) or refuses (`/`, `\`, controls).
fn check_percent_escapes(text: &str, segment: &str) -> Result<(), String> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).unwrap_or("");
            let Ok(byte) = u8::from_str_radix(hex, 16) else {
                return Err(format!("`{text}` has a malformed `%` escape"));
            };
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                return Err(format!(
                    "`{text}`: write `{}` instead of `%{hex}` (requests are matched decoded)",
                    byte as char
                ));
            }
            if byte == b'/' || byte == b'\\' || byte.is_ascii_control() {
                return Err(format!(
                    "`{text}`: `%{hex}` is refused in request paths, so it can never match"
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// `strip_prefix`: starts with `/`, does not end with `/`, and is a
/// segment-wise prefix of the template's literal start.
pub fn check_strip_prefix(prefix: &str, template: &PathTemplate) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("`{prefix}` must start with `/`"));
    }
    if prefix.ends_with('/') {
        return Err(format!("`{prefix}` must not end with `/`"));
    }
    let segments: Vec<&str> = prefix[1..].split('/').collect();
    let literal = &template.literal_prefix;
    let fits = segments.len() <= literal.len()
        && segments.iter().zip(literal).all(|(a, b)| *a == b.as_str());
    if !fits {
        return Err(format!(
            "`{prefix}` is not a whole-segment prefix of the literal start of `{}`",
            template.text
        ));
    }
    Ok(())
}

/// A method: an HTTP token (RFC 9110 `tchar`s), not `CONNECT`.
/// A `state.redis.url`: `redis://` or `rediss://` with a host, as the
/// `redis` crate reads it.
pub fn check_redis_url(text: &str) -> Result<(), String> {
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        // The URL is never echoed: it may carry a password.
        return Err("not a Redis URL: give `redis://host:port/db` (`rediss://` for TLS)".into());
    }
    match redis::Client::open(text) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("not a usable Redis URL ({:?})", e.kind())),
    }
}

/// The database a valid Redis URL names (0 when none).
fn redis_db(text: &str) -> i64 {
    redis::IntoConnectionInfo::into_connection_info(text)
        .map_or(0, |info| info.redis_settings().db())
}

pub fn check_method(method: &str) -> Result<(), String> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(format!("`{method}` is not an HTTP method"));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        return Err("`CONNECT` is never proxied (always 405)".to_string());
    }
    Ok(())
}

/// An issuer algorithm; `none` and HS* get a message saying why not.
pub fn parse_algorithm(text: &str) -> Result<Alg, String> {
    if let Ok(alg) = Alg::from_str(text) {
        return Ok(alg);
    }
    let allowed = Alg::ALL.map(Alg::as_str).join(" ");
    if text.eq_ignore_ascii_case("none") {
        return Err(format!(
            "`{text}` is refused: it would accept unsigned tokens (allowed: {allowed})"
        ));
    }
    if text.len() >= 2 && text[..2].eq_ignore_ascii_case("HS") {
        return Err(format!(
            "`{text}` is refused: HMAC uses a shared secret, not the issuer's public keys (allowed: {allowed})"
        ));
    }
    if let Some(alg) = Alg::ALL
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(text))
    {
        return Err(format!("unknown algorithm `{text}`; did you mean `{alg}`?"));
    }
    Err(format!("unknown algorithm `{text}` (allowed: {allowed})"))
}

/// A JWKS URI: https, or http to a loopback host only; no user info.
pub fn check_jwks_uri(text: &str) -> Result<(), String> {
    let uri = http::Uri::from_str(text).map_err(|_| format!("`{text}` is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("`{text}` is not an absolute URL"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("`{text}`: credentials in the URL are not allowed"));
    }
    let host = authority.host();
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => Err(format!(
            "`{text}`: keys must be fetched over https (http only to a loopback host)"
        )),
        _ => Err(format!("`{text}`: the scheme must be https")),
    }
}

/// `service.documentation_url`: an absolute `https` or `http` URL with a
/// host, without credentials or a fragment (the gateway appends
/// `#<reason>`), and nothing a problem body could not carry as is.
pub fn check_documentation_url(text: &str) -> Result<(), String> {
    if text.contains('#') {
        return Err(format!(
            "`{text}`: leave out the `#fragment`: problem bodies append `#<reason>`"
        ));
    }
    let uri = http::Uri::from_str(text).map_err(|_| format!("`{text}` is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "`{text}` is not an absolute URL (write e.g. https://docs.example.no/income-api)"
        ));
    };
    if authority.as_str().contains('@') {
        return Err(format!("`{text}`: credentials in the URL are not allowed"));
    }
    if authority.host().is_empty() {
        return Err(format!("`{text}`: the URL has no host"));
    }
    match scheme {
        "https" | "http" => Ok(()),
        _ => Err(format!("`{text}`: the scheme must be https or http")),
    }
}

/// `tracing.otlp_endpoint`: an absolute `http` or `https` URL with a host,
/// without credentials (a collector's token goes in
/// `OTEL_EXPORTER_OTLP_HEADERS`), query or fragment. Plain http to any host
/// is allowed, as SPEC's own example (`http://collector:4318`) has it:
/// spans carry no personal data.
pub fn check_otlp_endpoint(text: &str) -> Result<(), String> {
    let uri = http::Uri::from_str(text).map_err(|_| format!("`{text}` is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "`{text}` is not an absolute URL (write e.g. http://collector:4318)"
        ));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{text}`: credentials in the URL are not allowed (give a collector token in \
             OTEL_EXPORTER_OTLP_HEADERS)"
        ));
    }
    if authority.host().is_empty() {
        return Err(format!("`{text}`: the URL has no host"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("`{text}`: the URL takes no query or fragment"));
    }
    match scheme {
        "https" | "http" => Ok(()),
        "grpc" => Err(format!(
            "`{text}`: spans are sent over OTLP/HTTP: give the collector's HTTP port \
             (usually 4318) with http:// or https://"
        )),
        _ => Err(format!("`{text}`: the scheme must be http or https")),
    }
}

/// An Altinn platform or Maskinporten base URL: https, or http to a loopback
/// host only (as for `jwks_uri`); no credentials, query or fragment.
pub fn check_altinn_url(text: &str) -> Result<(), String> {
    let uri = http::Uri::from_str(text).map_err(|_| format!("`{text}` is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!("`{text}` is not an absolute URL"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("`{text}`: credentials in the URL are not allowed"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("`{text}`: a base URL takes no query or fragment"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback_host(authority.host()) => Ok(()),
        "http" => Err(format!(
            "`{text}`: Altinn must be reached over https (http only to a loopback host)"
        )),
        _ => Err(format!("`{text}`: the scheme must be https")),
    }
}

/// An owner or identifier of the Resource Registry: 1-100 characters of
/// a-z, A-Z, 0-9, `-` and `_` (they go into a URL path).
pub fn check_registry_name(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > 100 {
        return Err("must be 1 to 100 characters".to_string());
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "`{text}`: only letters, digits, `-` and `_` (as the Resource Registry writes it)"
        ));
    }
    Ok(())
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A header a subject or metadata value is read from: a valid header name,
/// not one the gateway strips (`X-Consent-*`, hop-by-hop) or the token's own.
pub fn check_binding_header(name: &str) -> Result<(), String> {
    let parsed = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let lower = parsed.as_str();
    if crate::header_names::is_consent_namespace(lower) {
        return Err(format!(
            "`{name}` is an X-Consent-* header, removed from every request: it can carry no value"
        ));
    }
    if crate::header_names::is_always_removed(lower) || lower == "authorization" {
        return Err(format!(
            "`{name}` cannot carry a request value (it is removed or reserved by the gateway)"
        ));
    }
    Ok(())
}

/// A body binding: exactly one of `json_pointer` (RFC 6901, `/a/b`) and
/// `form_field`.
fn check_body_field(body: &RawBodyField) -> Result<(), String> {
    match (&body.json_pointer, &body.form_field) {
        (Some(pointer), None) => {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "json_pointer `{pointer}` must start with `/` (RFC 6901, e.g. /person/fnr)"
                ));
            }
            let bad_escape = pointer
                .split('~')
                .skip(1)
                .any(|rest| !rest.starts_with(['0', '1']));
            if bad_escape {
                return Err(format!(
                    "json_pointer `{pointer}`: `~` must be followed by 0 or 1 (RFC 6901)"
                ));
            }
            Ok(())
        }
        (None, Some(field)) if field.is_empty() => Err("form_field must not be empty".into()),
        (None, Some(_)) => Ok(()),
        _ => Err("name exactly one of `json_pointer`, `form_field`".into()),
    }
}

/// Why `route` cannot join the method group of the earlier routes
/// `members` (same host and path template): a method listed twice, or a
/// route without `methods` (any method) in a group of more than one.
fn method_overlap(raw: &RawConfig, members: &[usize], route: &RawRoute) -> Option<String> {
    let upper = |methods: &Option<Vec<String>>| -> Option<Vec<String>> {
        methods
            .as_ref()
            .map(|m| m.iter().map(|m| m.to_ascii_uppercase()).collect())
    };
    let mine = upper(&route.methods);
    members.iter().find_map(|&first| {
        let theirs = upper(&raw.routes[first].methods);
        match (&mine, &theirs) {
            (None, _) | (_, None) => Some(format!(
                "unreachable: routes[{first}] has the same host and path and matches first; \
                 routes sharing a path need disjoint `methods`, each listed"
            )),
            (Some(mine), Some(theirs)) => mine.iter().find(|m| theirs.contains(m)).map(|m| {
                format!(
                    "unreachable for {m}: routes[{first}] has the same host and path and lists {m} too \
                     (routes sharing a path need disjoint `methods`)"
                )
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert!(parse_listen_addr("0.0.0.0:8080").is_ok());
        assert!(parse_listen_addr("[::]:8443").is_ok());
        assert!(parse_listen_addr("127.0.0.1:0").is_ok());
        for bad in [
            "localhost:8080",
            "0.0.0.0",
            ":8080",
            "0.0.0.0:99999",
            "::1:80",
            "",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_targets() {
        for good in [
            "10.0.0.5:8080",
            "income.internal:443",
            "income-api:80",
            "income-api.ns.svc.cluster.local:8080",
            "[::1]:8080",
            "Income.Internal:1",
        ] {
            assert_eq!(check_upstream_target(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.5",
            "income.internal",
            "income.internal:",
            "income.internal:0",
            "income.internal:65536",
            "income.internal:+80",
            "::1:8080",
            "[::1]8080",
            "[zz]:80",
            "under_score:80",
            "-bad.host:80",
            "10.0.0.256:80",
            ":80",
            "http://income:80",
        ] {
            assert!(check_upstream_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        for good in [
            "api.example.no",
            "*.example.no",
            "API.Example.NO",
            "localhost",
            "127.0.0.1",
        ] {
            assert_eq!(check_host_pattern(good), Ok(()), "{good}");
        }
        for bad in [
            "api.example.no:443",
            "*example.no",
            "api.*.no",
            "*.*.no",
            "*",
            "*.",
            "",
            "api..no",
            "api_x.no",
            "-api.no",
            "http://api.no",
        ] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_parse_params_and_literal_prefix() {
        let t = PathTemplate::parse("/income/v1/{fnr}/{year}").unwrap();
        assert_eq!(t.params, vec!["fnr", "year"]);
        assert_eq!(t.literal_prefix, vec!["income", "v1"]);
        let t = PathTemplate::parse("/files/{*rest}").unwrap();
        assert_eq!(t.params, vec!["rest"]);
        assert!(PathTemplate::parse("/").is_ok());
        assert!(PathTemplate::parse("/health/").is_ok());
        assert!(PathTemplate::parse("/a;b/%20x").is_ok());
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "income",
            "",
            "/a/{x}/{x}",
            "/a/{*rest}/b",
            "/a/{}",
            "/a/{*}",
            "/a/x{y}",
            "/a/{y}z",
            "/a/{b",
            "/a/b}",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a/b?x=1",
            "/a b",
            "/a/%41",
            "/a/%2F",
            "/a/%zz",
            "/a/%2",
            "/a\\b",
            "/a/{x.y}",
            "/a/*",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_shape_erases_names() {
        let a = PathTemplate::parse("/x/{a}/{*r}").unwrap();
        let b = PathTemplate::parse("/x/{b}/{*s}").unwrap();
        assert_eq!(a.shape(), b.shape());
        assert_ne!(a.shape(), PathTemplate::parse("/x/{a}/y").unwrap().shape());
    }

    #[test]
    fn strip_prefixes() {
        let t = PathTemplate::parse("/income/v1/{fnr}").unwrap();
        assert_eq!(check_strip_prefix("/income", &t), Ok(()));
        assert_eq!(check_strip_prefix("/income/v1", &t), Ok(()));
        for bad in [
            "income",
            "/income/",
            "/inc",
            "/income/v1/{fnr}",
            "/other",
            "/",
            "/income/v1/x",
        ] {
            assert!(check_strip_prefix(bad, &t).is_err(), "{bad}");
        }
        let whole = PathTemplate::parse("/health").unwrap();
        assert_eq!(check_strip_prefix("/health", &whole), Ok(()));
    }

    #[test]
    fn methods() {
        for good in ["GET", "get", "PROPFIND", "M-SEARCH"] {
            assert_eq!(check_method(good), Ok(()), "{good}");
        }
        for bad in ["CONNECT", "connect", "", "GET POST", "GE(T", "GÉT"] {
            assert!(check_method(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn algorithms() {
        assert_eq!(parse_algorithm("RS256"), Ok(Alg::RS256));
        assert_eq!(parse_algorithm("ES384"), Ok(Alg::ES384));
        let none = parse_algorithm("none").unwrap_err();
        assert!(none.contains("unsigned"), "{none}");
        let hs = parse_algorithm("HS256").unwrap_err();
        assert!(hs.contains("HMAC"), "{hs}");
        assert!(parse_algorithm("rs256")
            .unwrap_err()
            .contains("did you mean `RS256`"));
        assert!(parse_algorithm("EdDSA").is_err());
        assert!(parse_algorithm("ES512").is_err());
    }

    #[test]
    fn documentation_urls() {
        for good in [
            "https://docs.example.no/income",
            "http://localhost:8000/docs.html",
            "https://example.no",
        ] {
            assert_eq!(check_documentation_url(good), Ok(()), "{good}");
        }
        for bad in [
            "docs.example.no/income",
            "/docs",
            "ftp://example.no/docs",
            "https://user:pw@example.no/docs",
            "https://example.no/docs#top",
            "https://exa mple.no/",
            "",
        ] {
            assert!(check_documentation_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn otlp_endpoints() {
        for ok in [
            "http://collector:4318",
            "https://otel.example.no/v1/traces",
            "http://127.0.0.1:4318/",
        ] {
            assert_eq!(check_otlp_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("ftp://collector:4318", "scheme must be http or https"),
            ("/v1/traces", "not an absolute URL"),
            ("grpc://collector:4317", "OTLP/HTTP"),
            (
                "http://user:pw@collector:4318",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ),
            ("http://collector:4318/v1/traces?x=1", "no query"),
            ("not a url at all", "not a URL"),
        ] {
            let err = check_otlp_endpoint(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn jwks_uris() {
        for good in [
            "https://test.maskinporten.no/jwk",
            "http://127.0.0.1:8081/jwks",
            "http://127.9.9.9/jwks",
            "http://localhost:1/jwks",
            "http://[::1]:8081/jwks",
        ] {
            assert_eq!(check_jwks_uri(good), Ok(()), "{good}");
        }
        for bad in [
            "http://test.maskinporten.no/jwk",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1@evil.example/jwks",
            "ftp://localhost/jwks",
            "/jwk",
            "test.maskinporten.no/jwk",
            "",
            "http://localhost.evil.example/jwks",
        ] {
            assert!(check_jwks_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binding_headers() {
        assert_eq!(check_binding_header("X-Person-Id"), Ok(()));
        for bad in [
            "X-Consent-Subject",
            "x_consent_subject",
            "X.Consent.Id",
            "Authorization",
            "Connection",
            "Bad Header",
            "",
            "x-real-ip",
        ] {
            assert!(check_binding_header(bad).is_err(), "{bad}");
        }
    }
}
