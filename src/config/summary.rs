//! The one-screen summary `consent-gateway check` prints for a valid config:
//! listeners, admin, issuers, upstreams and routes (the first few when there
//! are many). Pure formatting.

use std::fmt::Write;

use super::model::{AuthMode, Config, Mode, PersonalData, Route};

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
    writeln!(out, "listen      {}", join_or(&listen, "(none)"))?;
    for tls in &server.tls {
        writeln!(
            out,
            "listen tls  {} (cert {}, key {})",
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
            }
        } else {
            "off"
        }
    )?;

    writeln!(out, "issuers ({})", config.issuers.len())?;
    for issuer in &config.issuers {
        let algs: Vec<&str> = issuer.algorithms.iter().map(|a| a.as_str()).collect();
        writeln!(
            out,
            "  {}: {} keys {} [{}]",
            issuer.name,
            issuer.issuer,
            issuer.jwks_uri,
            algs.join(" ")
        )?;
    }

    writeln!(out, "upstreams ({})", config.upstreams.len())?;
    for upstream in &config.upstreams {
        writeln!(
            out,
            "  {}: {}{}",
            upstream.name,
            upstream.targets.join(" "),
            if upstream.tls { " (tls)" } else { "" }
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
