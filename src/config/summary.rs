//! The one-screen summary `consent-gateway check` prints for a valid config:
//! listeners, admin, service, issuers, upstreams and routes (the first few when there
//! are many). Pure formatting.

use std::fmt::Write;

use super::model::{AuthMode, Config, Mode, PersonalData, Route, StateBackend, UpstreamProtocol};

/// Routes listed in full before the rest are only counted.
pub const SUMMARY_ROUTE_LIMIT: usize = 20;

/// A short human-readable summary of `config`.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_summary(&mut out, config);
    out
}

fn write_summary(out: &mut String, config: &Config) -> std::fmt::Result {
    let server = &config.server;
    writeln!(
        out,
        "config {} (sha256 {})",
        config
            .source_files
            .first()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        short(&config.config_sha256)
    )?;
    for extra in config.source_files.iter().skip(1) {
        writeln!(out, "  access list {}", extra.display())?;
    }
    let listen: Vec<String> = server.listen.iter().map(ToString::to_string).collect();
    let h2c = if server.h2c { " (and h2c)" } else { "" };
    writeln!(out, "listen      {}{h2c}", join_or(&listen, "(none)"))?;
    for tls in &server.tls {
        let alpn = match (tls.h2, tls.http11) {
            (true, true) => "h2, http/1.1",
            (true, false) => "h2",
            _ => "http/1.1",
        };
        writeln!(
            out,
            "listen tls  {} (cert {}, key {}; alpn {alpn})",
            tls.listen,
            tls.cert.display(),
            tls.key.display()
        )?;
    }
    writeln!(
        out,
        "admin       {}",
        server
            .admin_listen
            .map_or_else(|| "(disabled)".to_string(), |a| a.to_string())
    )?;
    if let Some(authz) = &server.authz {
        let listen = authz
            .listen
            .map_or_else(|| "-".to_string(), |a| a.to_string());
        let secret = if authz.shared_secret.is_some() {
            "shared secret"
        } else {
            "no secret"
        };
        writeln!(
            out,
            "authz       {listen} (original request: {:?}; {secret})",
            authz.original_request
        )?;
    }
    writeln!(
        out,
        "threads     {}; max token {} bytes; max header block {} bytes, {:?} to arrive; max {} connections per listener",
        server.threads,
        server.max_token_bytes,
        server.limits.max_request_header_bytes,
        server.limits.header_read_timeout,
        server.limits.max_connections
    )?;
    writeln!(
        out,
        "audit       {}",
        if config.audit.enabled {
            match config.audit.personal_data {
                PersonalData::Masked => "on (identity numbers masked)",
                PersonalData::Clear => "on (identity numbers in CLEAR)",
                PersonalData::Omit => "on (identity numbers omitted)",
                PersonalData::Pseudonymized => "on (identity numbers pseudonymized)",
            }
        } else {
            "off"
        }
    )?;
    if let Some(tracing) = &config.tracing {
        writeln!(
            out,
            "tracing     OTLP/HTTP to {} (queue {} spans)",
            tracing.otlp_endpoint, tracing.queue_spans
        )?;
    }
    write_service(out, config)?;
    if let Some(altinn) = &config.altinn {
        let lists: Vec<String> = super::model::Altinn::lists_in_use(config)
            .iter()
            .map(ToString::to_string)
            .collect();
        writeln!(
            out,
            "altinn      {} ({}, Maskinporten {}), client {}, kid {}; refresh {:?}, max stale {:?}; access lists: {}",
            altinn.environment.name(),
            altinn.platform_url,
            altinn.maskinporten_url,
            altinn.client_id,
            altinn.kid,
            altinn.refresh,
            altinn.max_stale,
            join_or(&lists, "(none)")
        )?;
    }

    match &config.state {
        StateBackend::Memory => writeln!(out, "state       memory (this process only)")?,
        StateBackend::Redis(r) => writeln!(
            out,
            "state       redis ({}{}), key prefix {:?}, time-out {}ms",
            r.servers.mode(),
            if r.servers.tls() { ", TLS" } else { "" },
            r.key_prefix,
            r.timeout.as_millis()
        )?,
    }

    writeln!(out, "issuers ({})", config.issuers.len())?;
    for issuer in &config.issuers {
        let algs: Vec<&str> = issuer.algorithms.iter().map(|a| a.as_str()).collect();
        writeln!(
            out,
            "  {}: {} keys {} [{}]",
            issuer.name,
            issuer.issuer,
            issuer
                .jwks_file
                .as_ref()
                .map_or(issuer.jwks_uri.clone(), |f| format!("file {}", f.display())),
            algs.join(" ")
        )?;
    }

    writeln!(out, "upstreams ({})", config.upstreams.len())?;
    for upstream in &config.upstreams {
        writeln!(
            out,
            "  {}: {}{}{}",
            upstream.name,
            upstream.targets.join(" "),
            if upstream.tls { " (tls)" } else { "" },
            match upstream.protocol {
                UpstreamProtocol::H1 => "",
                UpstreamProtocol::H2 => " (h2)",
                UpstreamProtocol::H2c => " (h2c)",
            }
        )?;
    }

    writeln!(out, "routes ({}, first match wins)", config.routes.len())?;
    for route in config.routes.iter().take(SUMMARY_ROUTE_LIMIT) {
        write_route(out, config, route)?;
    }
    if config.routes.len() > SUMMARY_ROUTE_LIMIT {
        writeln!(
            out,
            "  ... and {} more routes",
            config.routes.len() - SUMMARY_ROUTE_LIMIT
        )?;
    }
    Ok(())
}

/// `service:` in one line, when any of it is set.
fn write_service(out: &mut String, config: &Config) -> std::fmt::Result {
    let service = &config.service;
    let mut parts = Vec::new();
    if let Some(name) = &service.name {
        parts.push(name.clone());
    }
    if let Some(contact) = &service.contact {
        parts.push(format!("contact {contact}"));
    }
    if let Some(url) = &service.documentation_url {
        parts.push(format!("documentation {url}"));
    }
    if parts.is_empty() {
        return Ok(());
    }
    writeln!(out, "service     {}", parts.join("; "))
}

fn write_route(out: &mut String, config: &Config, route: &Route) -> std::fmt::Result {
    let methods = if route.methods.is_empty() {
        "ANY".to_string()
    } else {
        route.methods.join(",")
    };
    let auth = match route.auth.mode {
        AuthMode::Consent => "consent",
        AuthMode::Token => "token",
        AuthMode::None => "none",
    };
    let upstream = config
        .upstreams
        .get(route.upstream)
        .map_or("?", |u| u.name.as_str());
    write!(
        out,
        "  {}: {} {}{} -> {} auth={}",
        route.name,
        methods,
        route.host.as_deref().unwrap_or(""),
        route.path,
        upstream,
        auth
    )?;
    if route.mode == Mode::ReportOnly {
        out.push_str(" mode=report_only");
    }
    if route.one_time {
        out.push_str(" one_time");
    }
    if route.grpc {
        out.push_str(" grpc");
    }
    if let Some(limit) = &route.rate_limit {
        write!(
            out,
            " rate_limit={}/{}ms+{} per {}",
            limit.requests,
            limit.period.as_millis(),
            limit.burst,
            limit.per.as_str()
        )?;
    }
    if !route.auth.issuers.is_empty() {
        let names: Vec<&str> = route
            .auth
            .issuers
            .iter()
            .filter_map(|&i| config.issuers.get(i).map(|x| x.name.as_str()))
            .collect();
        write!(out, " issuers={}", names.join(","))?;
    }
    out.push('\n');
    Ok(())
}

fn join_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(" ")
    }
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Advice on rules that are valid but probably weaker than meant: printed by
/// `check` and logged at start and reload. Never an error: each can be
/// deliberate.
pub fn warnings(config: &Config) -> Vec<String> {
    use crate::config::AuthMode;
    let mut out = Vec::new();
    for route in &config.routes {
        let has_params = route.path.contains('{');
        if let Some(consent) = &route.auth.consent {
            if has_params && consent.subject.is_none() {
                out.push(format!(
                    "route {}: the path has parameters but `consent.subject` binds none of them: \
                     a consent from any person or organisation is accepted for any {}",
                    route.name, route.path
                ));
            }
        }
    }
    for open in config
        .routes
        .iter()
        .filter(|r| r.auth.mode == AuthMode::None && r.path.contains("{*"))
    {
        let guarded: Vec<&str> = config
            .routes
            .iter()
            .filter(|r| r.auth.mode != AuthMode::None && r.upstream == open.upstream)
            .map(|r| r.name.as_str())
            .collect();
        if !guarded.is_empty() {
            out.push(format!(
                "route {} (auth: none, catch-all {}) reaches the same upstream as {}: a backend \
                 that matches paths case-insensitively or ignores `;params` may serve their data \
                 through it",
                open.name,
                open.path,
                guarded.join(", ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod warning_tests {
    use std::path::Path;

    fn load(yaml: &str) -> crate::config::Config {
        crate::config::load_str(yaml, Path::new("/nonexistent/gateway.yaml")).unwrap()
    }

    const BASE: &str = "issuers:\n  - name: i\n    issuer: \"https://i.example/\"\n    jwks_uri: \"https://i.example/jwk\"\nupstreams:\n  - name: u\n    targets: [\"127.0.0.1:1\"]\n";

    #[test]
    fn unbound_subject_and_shared_catch_all_are_flagged() {
        let config = load(&format!(
            "{BASE}routes:\n  - name: income\n    path: /income/{{fnr}}\n    upstream: u\n    issuers: [i]\n    consent:\n      resources: [r]\n  - name: open\n    path: /public/{{*rest}}\n    upstream: u\n    auth: none\n"
        ));
        let w = super::warnings(&config);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("route income"));
        assert!(w[1].contains("route open"));
    }

    #[test]
    fn bound_subject_and_separate_upstreams_are_quiet() {
        let config = load(&format!(
            "{BASE}  - name: v\n    targets: [\"127.0.0.1:2\"]\nroutes:\n  - name: income\n    path: /income/{{fnr}}\n    upstream: u\n    issuers: [i]\n    consent:\n      resources: [r]\n      subject: {{ path_param: fnr }}\n  - name: open\n    path: /public/{{*rest}}\n    upstream: v\n    auth: none\n"
        ));
        assert!(super::warnings(&config).is_empty());
    }

    #[test]
    fn service_is_summarised_only_when_set() {
        let routes = "routes:\n  - {name: o, path: /o, upstream: u, auth: none}\n";
        let config = load(&format!("{BASE}{routes}"));
        assert!(!super::summary(&config).contains("service"));
        let config = load(&format!(
            "{BASE}{routes}service:\n  name: Income\n  documentation_url: https://d.example/x\n"
        ));
        assert!(super::summary(&config)
            .contains("service     Income; documentation https://d.example/x\n"));
    }
}
