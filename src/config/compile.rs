//! Raw file -> runtime model (`model.rs`), after `validate` passed: names to
//! indexes, organisation numbers to `0192:<orgnr>`, methods upper case, hosts,
//! metadata keys and header names lower case, access lists merged, content
//! hashes computed. Pure: it uses what validation already read.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use aws_lc_rs::digest::{Context as Digest, SHA256};

use super::model::{
    AccessListRef, Altinn, AltinnEnvironment, Audit, AuthMode, Authz, Binding, BodyField, Config,
    ConsentRule, DelegationRule, ForwardRule, HealthCheck, Issuer, Limits, Mode, OriginalRequest,
    PersonalData, RateLimit, RatePer, RedisServers, RedisState, RedisTls, Route, RouteAuth,
    ScopeRule, Server, Service, StateBackend, SubjectTypes, SyncedConsumers, TlsListener, Tracing,
    Upstream, UpstreamProtocol, MAX_BODY_BYTES,
};
use super::orgno::normalize_org_entry;
use super::raw::{
    RawAlpn, RawAltinn, RawAltinnEnvironment, RawAuth, RawAuthz, RawBackend, RawBinding, RawConfig,
    RawConsent, RawMode, RawOnStoreError, RawOriginalRequest, RawPersonalData, RawProtocol,
    RawRateLimit, RawRatePer, RawRoute, RawState, RawSubjectType,
};
use super::validate::{parse_algorithm, parse_listen_addr, Checked, Context};
use super::ConfigError;

/// Builds the runtime config. `text` is the config file's bytes (for its
/// hash). Errors here mean validation missed something: they are reported,
/// never panicked on.
pub fn compile(
    raw: &RawConfig,
    text: &[u8],
    checked: &Checked,
    ctx: &Context<'_>,
) -> Result<Config, Vec<ConfigError>> {
    let mut c = Compiler {
        ctx,
        checked,
        errors: Vec::new(),
    };
    let server = c.server(raw);
    let issuers = c.issuers(raw);
    let upstreams = c.upstreams(raw);
    let issuer_index: HashMap<&str, usize> = raw
        .issuers
        .iter()
        .enumerate()
        .map(|(i, x)| (x.name.as_str(), i))
        .collect();
    let upstream_index: HashMap<&str, usize> = raw
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, x)| (x.name.as_str(), i))
        .collect();
    let routes: Vec<Route> = raw
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, route)| c.route(i, route, &issuer_index, &upstream_index))
        .collect();
    let pseudonym_key = checked.pseudonym_key.clone();
    if !c.errors.is_empty() {
        return Err(c.errors);
    }

    let mut source_files = vec![ctx.config_file.to_path_buf()];
    source_files.extend(checked.access_lists.iter().map(|list| list.path.clone()));
    if let Some(file) = &raw.audit.pseudonym_key_file {
        source_files.push(ctx.resolve(file));
    }
    let secret_file = raw.server.authz.as_ref();
    let secret_file = secret_file.and_then(|a| a.shared_secret_file.as_ref());
    if let Some(file) = secret_file {
        source_files.push(ctx.resolve(file));
    }
    let state = state_backend(&raw.state, ctx);
    if let Some(tls) = redis_tls(&state) {
        // Watched: new certificates reload (and rebuild the store).
        let files = [&tls.ca_file, &tls.cert_file, &tls.key_file];
        source_files.extend(files.into_iter().flatten().cloned());
    }
    let config_sha256 = hex_sha256(&[text]);
    let mut content = Digest::new(&SHA256);
    hash_file(&mut content, ctx.config_file, text);
    for list in &checked.access_lists {
        hash_file(&mut content, &list.path, &list.bytes);
    }
    if let (Some(file), Some(key)) = (&raw.audit.pseudonym_key_file, &pseudonym_key) {
        // A new key is a new generation (its bytes never leave the hash).
        hash_file(&mut content, &ctx.resolve(file), key);
    }
    if let (Some(file), Some(secret)) = (secret_file, &checked.authz_secret) {
        // A new secret is a new generation (its bytes never leave the hash).
        hash_file(&mut content, &ctx.resolve(file), secret);
    }
    if let Some(tls) = redis_tls(&state) {
        content.update(tls.files_sha256.as_bytes());
    }
    let content_sha256 = hex(content.finish().as_ref());

    Ok(Config {
        server,
        issuers,
        upstreams,
        routes,
        audit: Audit {
            enabled: raw.audit.enabled,
            personal_data: match raw.audit.personal_data {
                RawPersonalData::Masked => PersonalData::Masked,
                RawPersonalData::Clear => PersonalData::Clear,
                RawPersonalData::Omit => PersonalData::Omit,
                RawPersonalData::Pseudonymized => PersonalData::Pseudonymized,
            },
            pseudonym_key,
            queue_lines: raw.audit.queue_lines.max(1),
        },
        state,
        service: raw
            .service
            .as_ref()
            .map_or_else(Service::default, |service| Service {
                name: service.name.clone(),
                contact: service.contact.clone(),
                documentation_url: service.documentation_url.clone(),
            }),
        altinn: raw.altinn.as_ref().map(|a| altinn(a, ctx)),
        tracing: raw.tracing.as_ref().and_then(|t| {
            Some(Tracing {
                otlp_endpoint: otlp_traces_url(t.otlp_endpoint.as_deref()?),
                queue_spans: t.queue_spans.max(1),
            })
        }),
        source_files,
        config_sha256,
        content_sha256,
    })
}

/// The traces URL of `tracing.otlp_endpoint`: a base URL (no path, or `/`)
/// gets `/v1/traces`, as OTLP/HTTP's `OTEL_EXPORTER_OTLP_ENDPOINT` does; a
/// URL with a path is taken as the full traces URL.
pub fn otlp_traces_url(endpoint: &str) -> String {
    let has_path = endpoint
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .is_some_and(|path| path != "/");
    if has_path {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// The `altinn` section: the environment's hosts unless overridden.
fn altinn(raw: &RawAltinn, ctx: &Context<'_>) -> Altinn {
    let environment = match raw.environment {
        RawAltinnEnvironment::Tt02 => AltinnEnvironment::Tt02,
        RawAltinnEnvironment::Production => AltinnEnvironment::Production,
    };
    let base = |url: &Option<String>, preset: &str| {
        url.as_deref()
            .unwrap_or(preset)
            .trim_end_matches('/')
            .to_string()
    };
    Altinn {
        environment,
        platform_url: base(&raw.platform_url, environment.platform_url()),
        maskinporten_url: base(&raw.maskinporten_url, environment.maskinporten_url()),
        client_id: raw.maskinporten.client_id.clone(),
        kid: raw.maskinporten.kid.clone(),
        key_file: ctx.resolve(&raw.maskinporten.key_file),
        scopes: raw.maskinporten.scopes.clone(),
        refresh: raw.refresh.0,
        max_stale: raw.max_stale.0,
        timeout: raw.timeout.0,
        cache_dir: raw.cache_dir.as_deref().map(|p| ctx.resolve(p)),
    }
}

/// Feeds one file to the content hash, framed (path, length, bytes) so that
/// moving bytes between files changes the hash.
fn hash_file(digest: &mut Digest, path: &Path, bytes: &[u8]) {
    let name = path.to_string_lossy();
    digest.update(&(name.len() as u64).to_be_bytes());
    digest.update(name.as_bytes());
    digest.update(&(bytes.len() as u64).to_be_bytes());
    digest.update(bytes);
}

/// sha256 (lowercase hex) of the concatenated parts.
pub fn hex_sha256(parts: &[&[u8]]) -> String {
    let mut digest = Digest::new(&SHA256);
    for part in parts {
        digest.update(part);
    }
    hex(digest.finish().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// The number of worker threads when `server.threads` is not given.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Compiler<'a, 'c> {
    ctx: &'a Context<'c>,
    checked: &'a Checked,
    errors: Vec<ConfigError>,
}

impl Compiler<'_, '_> {
    fn internal(&mut self, path: String, message: String) {
        self.errors.push(ConfigError {
            file: self.ctx.config_file.to_path_buf(),
            line: None,
            column: None,
            path,
            message: format!("{message} (not caught by validation)"),
        });
    }

    fn ok<T>(&mut self, path: impl FnOnce() -> String, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.internal(path(), message);
                None
            }
        }
    }

    fn server(&mut self, raw: &RawConfig) -> Server {
        let s = &raw.server;
        let listen = s
            .listen
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.ok(|| format!("server.listen[{i}]"), parse_listen_addr(a)))
            .collect();
        let tls = s
            .tls
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let listen = self.ok(
                    || format!("server.tls[{i}].listen"),
                    parse_listen_addr(&t.listen),
                )?;
                Some(TlsListener {
                    listen,
                    cert: self.ctx.resolve(&t.cert),
                    key: self.ctx.resolve(&t.key),
                    h2: t.alpn.contains(&RawAlpn::H2),
                    http11: t.alpn.contains(&RawAlpn::Http11),
                })
            })
            .collect();
        let admin_listen = s
            .admin_listen
            .as_ref()
            .and_then(|a| self.ok(|| "server.admin_listen".to_string(), parse_listen_addr(a)));
        Server {
            listen,
            tls,
            admin_listen,
            authz: s.authz.as_ref().map(|a| self.authz(a)),
            threads: s.threads.unwrap_or_else(default_threads),
            max_token_bytes: s.max_token_bytes,
            limits: Limits {
                max_request_header_bytes: s.limits.max_request_header_bytes,
                header_read_timeout: s.limits.header_read_timeout.0,
                max_connections: s.limits.max_connections,
                h2_max_concurrent_streams: s.limits.h2_max_concurrent_streams,
            },
            h2c: s.h2c,
            work_stealing: s.work_stealing,
            upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        }
    }

    fn authz(&mut self, raw: &RawAuthz) -> Authz {
        let mut addr = |path: &str, text: &Option<String>| {
            text.as_ref()
                .and_then(|a| self.ok(|| path.to_string(), parse_listen_addr(a)))
        };
        Authz {
            listen: addr("server.authz.listen", &raw.listen),
            grpc_listen: addr("server.authz.grpc_listen", &raw.grpc_listen),
            original_request: match raw.original_request {
                RawOriginalRequest::Auto => OriginalRequest::Auto,
                RawOriginalRequest::Envoy => OriginalRequest::Envoy,
                RawOriginalRequest::Nginx => OriginalRequest::Nginx,
                RawOriginalRequest::Traefik => OriginalRequest::Traefik,
            },
            path_prefix: raw.path_prefix.clone(),
            shared_secret: self.checked.authz_secret.clone(),
        }
    }

    fn issuers(&mut self, raw: &RawConfig) -> Vec<Issuer> {
        raw.issuers
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let mut algorithms = Vec::new();
                for (j, text) in x.algorithms.iter().enumerate() {
                    if let Some(alg) = self.ok(
                        || format!("issuers[{i}].algorithms[{j}]"),
                        parse_algorithm(text),
                    ) {
                        if !algorithms.contains(&alg) {
                            algorithms.push(alg);
                        }
                    }
                }
                Issuer {
                    name: x.name.clone(),
                    issuer: x.issuer.clone(),
                    jwks_uri: x.jwks_uri.clone().unwrap_or_default(),
                    jwks_file: x.jwks_file.as_deref().map(|p| self.ctx.resolve(p)),
                    ca_file: x.ca_file.as_deref().map(|p| self.ctx.resolve(p)),
                    algorithms,
                    audiences: x.audiences.clone(),
                    leeway: x.leeway.0,
                    jwks_refresh: x.jwks_refresh.0,
                    jwks_min_refresh: x.jwks_min_refresh.0,
                    jwks_max_stale: x.jwks_max_stale.0,
                    max_token_lifetime: x.max_token_lifetime.map(|d| d.0),
                }
            })
            .collect()
    }

    fn upstreams(&mut self, raw: &RawConfig) -> Vec<Upstream> {
        raw.upstreams
            .iter()
            .map(|u| Upstream {
                name: u.name.clone(),
                targets: u.targets.clone(),
                tls: u.tls,
                sni: u.sni.as_ref().map(|s| s.to_ascii_lowercase()),
                ca_file: u.ca_file.as_deref().map(|p| self.ctx.resolve(p)),
                connect_timeout: u.connect_timeout.0,
                read_timeout: u.read_timeout.0,
                health_check: u.health_check.as_ref().map(|h| HealthCheck {
                    path: h.path.clone(),
                    interval: h.interval.0,
                }),
                protocol: match u.protocol {
                    RawProtocol::H1 => UpstreamProtocol::H1,
                    RawProtocol::H2 => UpstreamProtocol::H2,
                    RawProtocol::H2c => UpstreamProtocol::H2c,
                },
            })
            .collect()
    }

    fn route(
        &mut self,
        i: usize,
        r: &RawRoute,
        issuer_index: &HashMap<&str, usize>,
        upstream_index: &HashMap<&str, usize>,
    ) -> Option<Route> {
        let Some(&upstream) = upstream_index.get(r.upstream.as_str()) else {
            self.internal(
                format!("routes[{i}].upstream"),
                format!("unknown upstream `{}`", r.upstream),
            );
            return None;
        };
        let mut methods: Vec<String> = Vec::new();
        for method in r.methods.iter().flatten() {
            let upper = method.to_ascii_uppercase();
            if !methods.contains(&upper) {
                methods.push(upper);
            }
        }
        let auth = self.route_auth(i, r, issuer_index)?;
        let Some(template) = self.checked.templates.get(i).cloned().flatten() else {
            self.internal(format!("routes[{i}].path"), "no parsed template".into());
            return None;
        };
        Some(Route {
            template,
            name: r.name.clone(),
            host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
            path: r.path.clone(),
            methods,
            upstream,
            strip_prefix: r.strip_prefix.clone(),
            max_body_bytes: r.reads_body().then(|| {
                r.max_body_bytes.map_or(MAX_BODY_BYTES, |n| {
                    usize::try_from(n).unwrap_or(MAX_BODY_BYTES)
                })
            }),
            auth,
            mode: match r.mode {
                RawMode::Enforce => Mode::Enforce,
                RawMode::ReportOnly => Mode::ReportOnly,
            },
            forward: ForwardRule {
                strip_authorization: r.forward.strip_authorization,
                preserve_host: r.forward.preserve_host,
            },
            one_time: r.consent.as_ref().is_some_and(|c| c.one_time),
            rate_limit: r.rate_limit.as_ref().map(rate_limit),
            grpc: r.grpc,
        })
    }

    fn route_auth(
        &mut self,
        i: usize,
        r: &RawRoute,
        issuer_index: &HashMap<&str, usize>,
    ) -> Option<RouteAuth> {
        let mode = match r.auth {
            RawAuth::Consent => AuthMode::Consent,
            RawAuth::Token => AuthMode::Token,
            RawAuth::None => AuthMode::None,
        };
        let mut issuers = Vec::new();
        for name in r.issuers.iter().flatten() {
            match issuer_index.get(name.as_str()) {
                Some(&index) if !issuers.contains(&index) => issuers.push(index),
                Some(_) => {}
                None => {
                    self.internal(
                        format!("routes[{i}].issuers"),
                        format!("unknown issuer `{name}`"),
                    );
                    return None;
                }
            }
        }
        let scopes = r
            .scopes
            .as_ref()
            .map(|s| ScopeRule {
                all: s.all.clone(),
                any: s.any.clone(),
            })
            .unwrap_or_default();
        let delegation = match &r.delegation {
            None => DelegationRule::default(),
            Some(d) => DelegationRule {
                allow: d.allow,
                suppliers: if d.suppliers.is_empty() {
                    None
                } else {
                    Some(self.org_set(
                        &format!("routes[{i}].delegation.suppliers"),
                        d.suppliers.iter(),
                    ))
                },
            },
        };
        let consumers = match &r.consumers {
            None => None,
            Some(c) => {
                let path = format!("routes[{i}].consumers");
                let mut set = self.org_set(&path, c.allow.iter().flatten());
                if let Some(file) = &c.file {
                    let resolved = self.ctx.resolve(file);
                    match self.checked.access_list_index.get(&resolved) {
                        Some(&index) => {
                            set.extend(self.checked.access_lists[index].entries.iter().cloned())
                        }
                        None => {
                            self.internal(
                                format!("{path}.file"),
                                format!("access list `{}` was not read", resolved.display()),
                            );
                            return None;
                        }
                    }
                }
                Some(set)
            }
        };
        let altinn = r
            .consumers
            .as_ref()
            .and_then(|c| c.altinn_access_lists.as_ref())
            .map(|lists| {
                // No copy yet: until one arrives (from Altinn or the cache)
                // a consumer found on no other list is 503.
                SyncedConsumers::empty(
                    lists
                        .iter()
                        .map(|l| AccessListRef {
                            owner: l.owner.clone(),
                            identifier: l.identifier.clone(),
                        })
                        .collect(),
                )
            });
        let consent = match (&r.consent, mode) {
            (Some(consent), AuthMode::Consent) => Some(consent_rule(consent)),
            (None, AuthMode::Consent) => {
                self.internal(format!("routes[{i}].consent"), "missing".to_string());
                return None;
            }
            _ => None,
        };
        Some(RouteAuth {
            mode,
            issuers,
            scopes,
            delegation,
            consumers,
            altinn,
            consent,
        })
    }

    fn org_set<'e>(
        &mut self,
        path: &str,
        entries: impl Iterator<Item = &'e String>,
    ) -> HashSet<String> {
        let mut set = HashSet::new();
        for entry in entries {
            match normalize_org_entry(entry) {
                Ok(normalised) => {
                    set.insert(normalised);
                }
                Err(e) => self.internal(path.to_string(), e.to_string()),
            }
        }
        set
    }
}

fn binding(raw: &RawBinding) -> Option<Binding> {
    if let Some(param) = &raw.path_param {
        Some(Binding::PathParam(param.clone()))
    } else if let Some(header) = &raw.header {
        Some(Binding::Header(header.to_ascii_lowercase()))
    } else if let Some(query) = &raw.query {
        Some(Binding::Query(query.clone()))
    } else {
        let body = raw.body.as_ref()?;
        match (&body.json_pointer, &body.form_field) {
            (Some(pointer), None) => Some(Binding::Body(BodyField::JsonPointer(pointer.clone()))),
            (None, Some(field)) => Some(Binding::Body(BodyField::FormField(field.clone()))),
            _ => None,
        }
    }
}

fn rate_limit(raw: &RawRateLimit) -> RateLimit {
    RateLimit {
        per: match raw.per {
            RawRatePer::Consumer => RatePer::Consumer,
            RawRatePer::ConsumerAndSubject => RatePer::ConsumerAndSubject,
        },
        requests: raw.requests,
        period: raw.period.0,
        burst: raw.burst,
        allow_on_store_error: raw.on_store_error == RawOnStoreError::Allow,
    }
}

/// `state.redis.tls`, when set.
fn redis_tls(state: &StateBackend) -> Option<&RedisTls> {
    match state {
        StateBackend::Redis(r) => r.tls.as_ref(),
        StateBackend::Memory => None,
    }
}

fn state_backend(raw: &RawState, ctx: &Context<'_>) -> StateBackend {
    let Some(redis) = raw
        .redis
        .as_ref()
        .filter(|_| raw.backend == RawBackend::Redis)
    else {
        // Validation refuses `redis` without `state.redis`.
        return StateBackend::Memory;
    };
    let servers = match (&redis.url, &redis.sentinel, &redis.cluster) {
        (_, Some(s), _) => RedisServers::Sentinel {
            master_name: s.master_name.clone(),
            urls: s.urls.clone(),
            db: s.db,
            username: s.username.clone(),
            password: s.password.clone(),
        },
        (_, None, Some(c)) => RedisServers::Cluster {
            urls: c.urls.clone(),
        },
        // Validation asks for exactly one of the three.
        (url, None, None) => RedisServers::Standalone {
            url: url.clone().unwrap_or_default(),
        },
    };
    let resolve = |p: &Option<std::path::PathBuf>| p.as_deref().map(|p| ctx.resolve(p));
    let tls = redis.tls.as_ref().map(|t| {
        let mut tls = RedisTls {
            ca_file: resolve(&t.ca_file),
            cert_file: resolve(&t.cert_file),
            key_file: resolve(&t.key_file),
            files_sha256: String::new(),
        };
        // New certificates are a new `state`: the store is built again.
        let mut digest = Digest::new(&SHA256);
        for file in [&tls.ca_file, &tls.cert_file, &tls.key_file]
            .into_iter()
            .flatten()
        {
            let bytes = ctx.files.read(file).unwrap_or_default();
            hash_file(&mut digest, file, &bytes);
        }
        tls.files_sha256 = hex(digest.finish().as_ref());
        tls
    });
    StateBackend::Redis(Box::new(RedisState {
        servers,
        tls,
        key_prefix: redis.key_prefix.clone(),
        wait_for_replicas: redis.wait_for_replicas,
        timeout: redis.timeout.0,
    }))
}

fn consent_rule(raw: &RawConsent) -> ConsentRule {
    let subject = raw.subject.as_ref().and_then(|s| {
        binding(&RawBinding {
            path_param: s.path_param.clone(),
            header: s.header.clone(),
            query: s.query.clone(),
            body: s.body.clone(),
        })
    });
    let subject_types = match &raw.subject {
        None => SubjectTypes {
            person: true,
            organization: true,
        },
        Some(s) => SubjectTypes {
            person: s.types.contains(&RawSubjectType::Person),
            organization: s.types.contains(&RawSubjectType::Organization),
        },
    };
    let mut metadata_required: Vec<String> = Vec::new();
    for key in &raw.metadata.required {
        let lower = key.to_lowercase();
        if !metadata_required.contains(&lower) {
            metadata_required.push(lower);
        }
    }
    let metadata_match = raw
        .metadata
        .matches
        .0
        .iter()
        .filter_map(|(key, b)| binding(b).map(|b| (key.to_lowercase(), b)))
        .collect();
    ConsentRule {
        resources: raw.resources.clone(),
        actions: raw.actions.clone(),
        subject,
        subject_types,
        metadata_required,
        metadata_match,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_base_urls_get_the_traces_path() {
        for (given, url) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "https://otel.example.no",
                "https://otel.example.no/v1/traces",
            ),
            (
                "https://otel.example.no/custom/traces",
                "https://otel.example.no/custom/traces",
            ),
            (
                "http://127.0.0.1:4318/v1/traces",
                "http://127.0.0.1:4318/v1/traces",
            ),
        ] {
            assert_eq!(otlp_traces_url(given), url, "{given}");
        }
    }

    #[test]
    fn sha256_hex_of_known_input() {
        assert_eq!(
            hex_sha256(&[b"abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex_sha256(&[b"a", b"bc"]), hex_sha256(&[b"abc"]));
    }

    #[test]
    fn default_threads_is_positive() {
        assert!(default_threads() >= 1);
    }
}
