//! External authorization (SPEC section 13): the gateway beside an existing
//! ingress. A check names an original request by its caller's convention
//! (`facts`); every door hands it to `check_original`, which decides it by
//! the one `Gateway::decide` and `Gateway::admit` the proxy uses, and it is
//! answered by the door's protocol (`http`, `grpc`). Fail closed: a check
//! without a valid shared secret (when one is configured) or without the
//! original request's facts is denied, never allowed.
//!
//! - `facts`: Envoy (HTTP and gRPC) / nginx / Traefik conventions -> the
//!   original request.
//! - `http`: the HTTP listener (`server.authz.listen`), a pingora `ServeHttp`.
//! - `grpc`: the gRPC listener (`server.authz.grpc_listen`), Envoy / Istio
//!   ext_authz v3 (`envoy.service.auth.v3.Authorization/Check`), tonic.

pub mod facts;
pub mod grpc;
pub mod http;

use std::time::Instant;

use ::http::HeaderValue;
use ::http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq;

use crate::audit;
use crate::config::Authz;
use crate::error::Reason;
use crate::gateway::{Gateway, Snapshot};
use crate::metrics::NO_ROUTE_LABEL;
use crate::policy::body::RequestBody;
use crate::policy::forward::verified_headers;
use crate::policy::headers::headers_to_strip;
use crate::policy::{Authorized, DeniedFacts, RequestFacts, Verdict};
use crate::proxy::request_id::RequestId;
use crate::state::RateInfo;
use crate::trace_context::TraceContext;
use facts::{read_original, CheckRequest, Original, OriginalBody, SECRET_HEADER};

/// The reason a check without the right shared secret is refused: 403
/// `consumer_not_allowed` (the caller is not one the gateway answers), so
/// ingresses that pass 401/403 through (nginx `auth_request`) still deny.
pub const BAD_SECRET: Reason = Reason::ConsumerNotAllowed;

/// Which door answered (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// The answer to one check, before a protocol renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Let the original request through with these verified facts.
    Allow(Box<Authorized>),
    /// `report_only`: let it through without verified facts.
    ShadowAllow(Reason),
    /// Refuse it; `allow` is a 405's `Allow` header.
    Deny {
        reason: Reason,
        allow: Option<String>,
    },
}

/// One decided check, for the protocol to render.
#[derive(Debug)]
pub struct Checked {
    pub answer: Answer,
    pub request_id: RequestId,
    /// The original request's headers the proxy would strip (the consent
    /// namespace, hop-by-hop, method overrides, `Connection`-named): for
    /// the caller to remove before forwarding (`policy::headers`), less
    /// the names an allow sets (those overwrite every client copy).
    pub strip: Vec<HeaderName>,
    /// The route's rate-limit state, for the `RateLimit` headers the proxy
    /// sends (with `Retry-After` on a 429).
    pub rate: Option<RateInfo>,
}

/// Whether `headers` carry the configured secret (always, when none is
/// configured). Compared in constant time.
pub fn secret_ok(expected: Option<&[u8]>, headers: &HeaderMap) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let mut values = headers.get_all(SECRET_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(given), None) => bool::from(given.as_bytes().ct_eq(expected)),
        _ => false,
    }
}

/// Decides one HTTP-door check: secret, original-request facts by the
/// configured convention, then checks 0-21 (`check_original`).
pub async fn check(
    gateway: &Gateway,
    snapshot: &Snapshot,
    settings: &Authz,
    protocol: Protocol,
    request: &CheckRequest<'_>,
) -> Checked {
    let original = if secret_ok(settings.shared_secret.as_deref(), request.headers) {
        let path_prefix = settings.path_prefix.as_deref();
        read_original(settings.original_request, path_prefix, request).map_err(missing_facts)
    } else {
        Err(BAD_SECRET)
    };
    let caller = Caller {
        protocol,
        method: request.method.as_str(),
        headers: request.headers,
    };
    check_original(gateway, snapshot, &caller, original).await
}

/// Who asked for a check, as metrics, the request id and the trace read it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub protocol: Protocol,
    /// The method to audit when the original one could not be read.
    pub method: &'a str,
    /// Where `X-Request-Id` and `traceparent` are read.
    pub headers: &'a HeaderMap,
}

/// A check whose original request could not be read: 400 `invalid_request`.
pub fn missing_facts(missing: facts::MissingFacts) -> Reason {
    log::debug!("authz check without the original request: {}", missing.0);
    Reason::InvalidRequest
}

/// Decides one check whose door has read (or refused: `Err`) the original
/// request: checks 0-21 by `Gateway::decide` (with the body when the route
/// binds it and the door has it), then `Gateway::admit`. Every door ends
/// here. Records the metrics and the audit line of the decision.
pub async fn check_original(
    gateway: &Gateway,
    snapshot: &Snapshot,
    caller: &Caller<'_>,
    original: Result<Original, Reason>,
) -> Checked {
    let started = Instant::now();
    let request_id = RequestId::for_request(caller.headers);
    let mut record = Record {
        protocol: caller.protocol,
        method: caller.method.to_string(),
        route: None,
        denied: DeniedFacts::default(),
        trace: trace_of(caller.headers),
        started,
    };
    let mut strip = Vec::new();
    let mut rate = None;
    let answer = match original {
        Err(reason) => Answer::Deny {
            reason,
            allow: None,
        },
        Ok(original) => {
            record.method = original.method.as_str().to_string();
            let verdict = decide_original(gateway, snapshot, &original).await;
            let (verdict, admitted_rate) = admit_shared_state(gateway, snapshot, verdict).await;
            rate = admitted_rate;
            strip = headers_to_strip(&original.headers, false);
            // `TE: trailers` is what a gRPC call through the ingress needs
            // upstream (the ingress itself handles hop-by-hop headers); the
            // proxy sends its own on gRPC routes, an ingress forwards the
            // client's, so it is not listed for removal. Any other TE is.
            if te_is_trailers(&original.headers) {
                strip.retain(|name| name != ::http::header::TE);
            }
            let answer = answer_of(verdict, &mut record);
            let route = record.route.and_then(|r| snapshot.config.routes.get(r));
            if route.is_some_and(|r| r.forward.strip_authorization) {
                // As the proxy does for such a route.
                strip.push(::http::header::AUTHORIZATION);
            }
            answer
        }
    };
    record.emit(gateway, snapshot, &answer, &request_id);
    match &answer {
        Answer::Deny { .. } => strip.clear(),
        Answer::Allow(authorized) => {
            // Envoy applies an allow's headers to set before its headers to
            // remove (ext_authz.cc, `Filter::onComplete`): a name the allow
            // sets must not be listed, or the verified value would go too.
            // The set overwrites every client copy of it.
            let set = verified_headers(authorized);
            strip.retain(|name| !set.iter().any(|(n, _)| n.as_str() == name.as_str()));
        }
        Answer::ShadowAllow(_) => {}
    }
    Checked {
        answer,
        request_id,
        strip,
        rate,
    }
}

/// Checks 0-21 for the original request; a route that binds the body gets
/// it when the door has it whole (gRPC `with_request_body`), else the
/// verdict stays `NeedBody` (refused by `answer_of`).
async fn decide_original(gateway: &Gateway, snapshot: &Snapshot, original: &Original) -> Verdict {
    let mut facts = RequestFacts {
        method: &original.method,
        version: ::http::Version::HTTP_11,
        target: &original.target,
        authority: None,
        headers: &original.headers,
        body: None,
    };
    let verdict = gateway.decide(snapshot, &facts).await;
    let Verdict::NeedBody { limit } = verdict else {
        return verdict;
    };
    facts.body = match &original.body {
        OriginalBody::Unknown => return verdict,
        OriginalBody::Truncated => Some(RequestBody::TooLarge),
        OriginalBody::Complete(body) if body.len() > limit => Some(RequestBody::TooLarge),
        OriginalBody::Complete(body) => Some(RequestBody::Complete(body)),
    };
    gateway.decide(snapshot, &facts).await
}

/// A verdict as a check's answer; notes the route and denied facts.
fn answer_of(verdict: Verdict, record: &mut Record) -> Answer {
    match verdict {
        Verdict::Allow { routed, authorized } => {
            record.route = Some(routed.route);
            Answer::Allow(Box::new(authorized))
        }
        Verdict::ShadowDeny { routed, denied } => {
            record.route = Some(routed.route);
            record.denied = denied.facts;
            Answer::ShadowAllow(denied.reason)
        }
        Verdict::Deny(refusal) => {
            record.route = refusal.route;
            record.denied = refusal.facts;
            Answer::Deny {
                reason: refusal.reason,
                allow: refusal.allow,
            }
        }
        // `Gateway::decide` never returns it; refuse rather than trust.
        Verdict::NeedKeys { .. } => Answer::Deny {
            reason: Reason::UnknownKey,
            allow: None,
        },
        // The route binds the body, which a check does not carry: such a
        // route is enforced in proxy mode only (README).
        Verdict::NeedBody { .. } => Answer::Deny {
            reason: Reason::InvalidRequest,
            allow: None,
        },
    }
}

/// The shared-state rules of an allowed check, as the proxy applies them:
/// the rate limit, then the one-time use (here at check time: the ingress,
/// not the gateway, forwards the request, so a consent is never given
/// back). A store fault follows the route's rules (fail closed for
/// one-time consents).
async fn admit_shared_state(
    gateway: &Gateway,
    snapshot: &Snapshot,
    verdict: Verdict,
) -> (Verdict, Option<RateInfo>) {
    let Verdict::Allow { routed, authorized } = verdict else {
        return (verdict, None);
    };
    let route = &snapshot.config.routes[routed.route];
    let admission = gateway.admit(snapshot, route, &authorized).await;
    let rate = admission.rate;
    let Some(reason) = admission.refused else {
        return (Verdict::Allow { routed, authorized }, rate);
    };
    let refusal = crate::policy::Refusal {
        reason,
        route: Some(routed.route),
        allow: None,
        facts: DeniedFacts::default(),
        close_connection: false,
    };
    let verdict = if route.mode == crate::config::Mode::ReportOnly {
        Verdict::ShadowDeny {
            routed,
            denied: refusal,
        }
    } else {
        Verdict::Deny(refusal)
    };
    (verdict, rate)
}

/// The original request's trace context (honoured, or started here).
fn trace_of(headers: &HeaderMap) -> TraceContext {
    TraceContext::from_headers(
        headers.get("traceparent").map(HeaderValue::as_bytes),
        headers.get("tracestate").map(HeaderValue::as_bytes),
        TraceContext::random(),
    )
}

/// What metrics and the audit line need of one check.
struct Record {
    protocol: Protocol,
    method: String,
    route: Option<usize>,
    denied: DeniedFacts,
    trace: TraceContext,
    started: Instant,
}

impl Record {
    /// `requests_total`, `request_duration_seconds`, `http_errors_total`
    /// (refused before routing) as in the proxy, `authz_checks_total`, and
    /// the audit line.
    fn emit(&self, gateway: &Gateway, snapshot: &Snapshot, answer: &Answer, id: &RequestId) {
        let metrics = &gateway.metrics;
        let route = self
            .route
            .and_then(|r| snapshot.config.routes.get(r))
            .map_or(NO_ROUTE_LABEL, |r| r.name.as_str());
        let (decision, reason, status, authorized) = match answer {
            Answer::Allow(a) => ("allow", "ok", 200, Some(&**a)),
            Answer::ShadowAllow(r) => ("shadow_deny", r.code(), 200, None),
            Answer::Deny { reason, .. } => ("deny", reason.code(), reason.status(), None),
        };
        let elapsed = self.started.elapsed();
        metrics
            .requests_total
            .with_label_values(&[route, decision, reason])
            .inc();
        metrics
            .request_duration_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        if self.route.is_none() {
            metrics.http_errors_total.with_label_values(&[reason]).inc();
        }
        metrics
            .authz_checks_total
            .with_label_values(&[self.protocol.label(), decision])
            .inc();
        let template = self.route.and_then(|r| snapshot.config.routes.get(r));
        if let Some(exporter) = crate::otlp::exporter() {
            // The check's server span: the original request's route and the
            // decision; no upstream call (the caller makes it).
            let end = std::time::SystemTime::now();
            exporter.record(&crate::otlp::RequestSpans {
                trace: &self.trace,
                start: end.checked_sub(elapsed).unwrap_or(end),
                end,
                method: &self.method,
                scheme: "http",
                protocol: "1.1",
                route: template.map(|r| (r.name.as_str(), r.path.as_str())),
                decision,
                reason,
                status,
                upstream: None,
            });
        }
        if !snapshot.config.audit.enabled {
            return;
        }
        let line = audit::AuditLine {
            ts: std::time::SystemTime::now(),
            request_id: id.as_str(),
            route,
            method: &self.method,
            path: template.map_or("-", |r| r.path.as_str()),
            decision,
            reason,
            status,
            authorized,
            denied: &self.denied,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            trace_id: Some(self.trace.trace_id.as_str()),
        };
        audit::emit(&line, &snapshot.config.audit);
    }
}

/// Whether every `TE` value of `headers` is exactly `trailers`.
fn te_is_trailers(headers: &::http::HeaderMap) -> bool {
    let mut values = headers.get_all(::http::header::TE).iter().peekable();
    values.peek().is_some()
        && values.all(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .all(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn te_trailers_alone_is_kept_for_grpc_through_an_ingress() {
        let with = |values: &[&str]| {
            let mut h = ::http::HeaderMap::new();
            for v in values {
                h.append(::http::header::TE, v.parse().unwrap());
            }
            super::te_is_trailers(&h)
        };
        assert!(with(&["trailers"]));
        assert!(with(&["Trailers", "trailers"]));
        assert!(!with(&[]));
        assert!(!with(&["trailers, gzip"]));
        assert!(!with(&["trailers", "deflate"]));
    }

    use super::*;

    #[test]
    fn the_secret_must_come_once_and_match() {
        let secret: &[u8] = b"0123456789abcdef";
        let mut h = HeaderMap::new();
        assert!(secret_ok(None, &h));
        assert!(!secret_ok(Some(secret), &h));
        h.insert(SECRET_HEADER, HeaderValue::from_static("0123456789abcdeX"));
        assert!(!secret_ok(Some(secret), &h));
        h.insert(SECRET_HEADER, HeaderValue::from_static("0123456789abcde"));
        assert!(!secret_ok(Some(secret), &h));
        h.insert(SECRET_HEADER, HeaderValue::from_static("0123456789abcdef"));
        assert!(secret_ok(Some(secret), &h));
        h.append(SECRET_HEADER, HeaderValue::from_static("0123456789abcdef"));
        assert!(!secret_ok(Some(secret), &h), "given twice");
    }
}
