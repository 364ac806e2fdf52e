//! Consumer documentation written from the configuration alone (SPEC 13,
//! `consent-gateway docs`): per route what a data consumer must do, and every
//! reason code the route can answer with the advice from `error.rs`. Pure: no
//! I/O, no network; it never reads upstream targets, file paths, secrets or
//! access-list members, so none can leak into a published page.
//!
//! - `markdown`: the page as Markdown (the source of the HTML page too).
//! - `html`: one self-contained HTML page, anchors per reason code.
//! - `openapi`: an OpenAPI 3.1 document.

pub mod html;
pub mod markdown;
pub mod openapi;

use crate::config::{AuthMode, Binding, BodyField, Config, Issuer, Mode, Route};
use crate::error::Reason;

/// The output formats of `consent-gateway docs --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
    Openapi,
}

/// Writes the consumer documentation of `config` in `format`.
pub fn render(config: &Config, format: Format) -> String {
    match format {
        Format::Markdown => markdown::render(config),
        Format::Html => html::render(config),
        Format::Openapi => openapi::render(config),
    }
}

/// The Maskinporten environment an issuer URL belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Test,
    Production,
    /// Not a Maskinporten host (a development or other issuer).
    Other,
}

impl Environment {
    /// `https://test.maskinporten.no/` is test, `https://maskinporten.no/`
    /// production (consent-token.md); anything else is another issuer.
    pub fn of(issuer: &str) -> Environment {
        let host = issuer
            .strip_prefix("https://")
            .map(|rest| rest.split(['/', ':']).next().unwrap_or(""))
            .unwrap_or("")
            .to_ascii_lowercase();
        match host.as_str() {
            "test.maskinporten.no" => Environment::Test,
            "maskinporten.no" => Environment::Production,
            _ => Environment::Other,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Environment::Test => "Maskinporten test",
            Environment::Production => "Maskinporten production",
            Environment::Other => "not Maskinporten (another issuer)",
        }
    }
}

/// The token endpoint of an issuer: Maskinporten's is `<issuer>token`; the
/// same convention is assumed for other issuers.
pub fn token_url(issuer: &Issuer) -> String {
    format!("{}/token", issuer.issuer.trim_end_matches('/'))
}

/// Whether `route` can answer with `reason` (exhaustive: a new reason must
/// be placed here). `no_route` belongs to no route.
pub fn route_can_answer(config: &Config, route: &Route, reason: Reason) -> bool {
    let auth = &route.auth;
    let checked = auth.mode != AuthMode::None && route.mode == Mode::Enforce;
    let consent = checked && auth.mode == AuthMode::Consent && auth.consent.is_some();
    let mut issuers = auth.issuers.iter().filter_map(|&i| config.issuers.get(i));
    match reason {
        Reason::InvalidRequest
        | Reason::HeadersTooLarge
        | Reason::MethodNotAllowed
        | Reason::UpstreamUnavailable
        | Reason::UpstreamTimeout => true,
        Reason::NoRoute => false,
        Reason::BodyTooLarge | Reason::UnsupportedMediaType => route.max_body_bytes.is_some(),
        Reason::InvalidTokenRequest
        | Reason::MissingToken
        | Reason::MalformedToken
        | Reason::UnknownKey
        | Reason::IssuerNotAllowed
        | Reason::AlgorithmNotAllowed
        | Reason::KeysUnavailable
        | Reason::BadSignature
        | Reason::MissingClaim
        | Reason::TokenExpired
        | Reason::TokenNotYetValid => checked,
        Reason::TokenLifetimeTooLong => checked && issuers.any(|i| i.max_token_lifetime.is_some()),
        Reason::AudienceMismatch => checked && issuers.any(|i| !i.audiences.is_empty()),
        Reason::InsufficientScope => {
            checked && !(auth.scopes.all.is_empty() && auth.scopes.any.is_empty())
        }
        Reason::SupplierNotAllowed => {
            checked && (!auth.delegation.allow || auth.delegation.suppliers.is_some())
        }
        Reason::ConsumerNotAllowed => checked && auth.consumers.is_some(),
        Reason::AccessListUnavailable => checked && auth.altinn.is_some(),
        Reason::ConsentMissing
        | Reason::ConsentRecipientMismatch
        | Reason::ConsentNotYetValid
        | Reason::ConsentExpired
        | Reason::ConsentResourceMismatch
        | Reason::ConsentSubjectMismatch => consent,
        Reason::ConsentMetadataMismatch => {
            consent
                && auth.consent.as_ref().is_some_and(|c| {
                    !c.metadata_required.is_empty() || !c.metadata_match.is_empty()
                })
        }
        // After an allow (SPEC section 13); never on `report_only`.
        Reason::ConsentAlreadyUsed => route.one_time && route.mode == Mode::Enforce,
        Reason::RateLimited => route.rate_limit.is_some() && route.mode == Mode::Enforce,
        Reason::StateUnavailable => {
            route.mode == Mode::Enforce
                && (route.one_time || route.rate_limit.is_some_and(|l| !l.allow_on_store_error))
        }
    }
}

/// One documented reason code: the variants that share a code
/// (`invalid_request`) are one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonRow {
    pub code: &'static str,
    pub status: u16,
    pub title: String,
    pub advice: String,
}

/// The rows for `reasons`, one per code, in decision order.
pub fn reason_rows(reasons: &[Reason]) -> Vec<ReasonRow> {
    let mut rows: Vec<ReasonRow> = Vec::new();
    for reason in reasons {
        if let Some(row) = rows.iter_mut().find(|row| row.code == reason.code()) {
            row.title = format!("{}; {}", row.title, reason.title().to_lowercase());
            row.advice = format!("{} {}", row.advice, reason.consumer_advice());
            continue;
        }
        rows.push(ReasonRow {
            code: reason.code(),
            status: reason.status(),
            title: reason.title().to_string(),
            advice: reason.consumer_advice().to_string(),
        });
    }
    rows
}

/// Every reason `route` can answer, in decision order.
pub fn route_reasons(config: &Config, route: &Route) -> Vec<Reason> {
    Reason::ALL
        .into_iter()
        .filter(|&reason| route_can_answer(config, route, reason))
        .collect()
}

/// The Markdown table of every reason code with its status and advice: the
/// one the README carries (between `<!-- reasons:begin -->` and
/// `<!-- reasons:end -->`) and the consumer documentation ends with.
pub fn reason_table_markdown() -> String {
    markdown::reason_table(&reason_rows(&Reason::ALL), true)
}

/// Where a bound request value goes, in words (`path parameter {fnr}`).
pub fn binding_place(binding: &Binding) -> (&'static str, &str) {
    match binding {
        Binding::PathParam(name) => ("path parameter", name),
        Binding::Header(name) => ("header", name),
        Binding::Query(name) => ("query parameter", name),
        Binding::Body(BodyField::JsonPointer(pointer)) => ("JSON body member", pointer),
        Binding::Body(BodyField::FormField(name)) => ("form body field", name),
    }
}

/// The route's methods in upper case; empty means any.
pub fn methods_label(route: &Route) -> String {
    if route.methods.is_empty() {
        "any method".to_string()
    } else {
        route.methods.join(", ")
    }
}

/// The issuers `route` accepts.
pub fn route_issuers<'c>(config: &'c Config, route: &Route) -> Vec<&'c Issuer> {
    route
        .auth
        .issuers
        .iter()
        .filter_map(|&i| config.issuers.get(i))
        .collect()
}

/// The issuers any route uses, in config order.
pub fn used_issuers(config: &Config) -> Vec<&Issuer> {
    config
        .issuers
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            config
                .routes
                .iter()
                .any(|r| r.auth.mode != AuthMode::None && r.auth.issuers.contains(i))
        })
        .map(|(_, issuer)| issuer)
        .collect()
}

/// The page's title.
pub fn title(config: &Config) -> String {
    match &config.service.name {
        Some(name) => format!("{name}: consumer documentation"),
        None => "Consumer documentation".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_come_from_the_issuer_url() {
        assert_eq!(
            Environment::of("https://test.maskinporten.no/"),
            Environment::Test
        );
        assert_eq!(
            Environment::of("https://maskinporten.no/"),
            Environment::Production
        );
        assert_eq!(
            Environment::of("https://MASKINPORTEN.no"),
            Environment::Production
        );
        for other in [
            "http://maskinporten.no/",
            "https://evil-maskinporten.no/",
            "https://maskinporten.no.evil.example/",
            "http://127.0.0.1:9999/",
            "",
        ] {
            assert_eq!(Environment::of(other), Environment::Other, "{other}");
        }
    }

    #[test]
    fn invalid_request_variants_share_one_row() {
        let rows = reason_rows(&Reason::ALL);
        assert_eq!(
            rows.iter().filter(|r| r.code == "invalid_request").count(),
            1
        );
        let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(rows.len(), codes.len());
    }
}
