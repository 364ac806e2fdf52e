//! One decision for every door (SPEC section 13): checks 0-21 and the
//! report-only rule as one pure function of the request's facts and the
//! config generation. The proxy, `explain` and the authorization endpoints
//! all call [`decide`], so they cannot disagree.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Method, Version};

use crate::clock::UnixTime;
use crate::config::{Binding, Config, Mode, Route};
use crate::error::Reason;
use crate::header_names::list_items;
use crate::policy::auth::check_token;
use crate::policy::body::{self, ParsedBody, RequestBody};
use crate::policy::headers::connection_is_acceptable;
use crate::policy::routes::{
    host_without_port, is_valid_host, normalize_path, strip_prefix, RouteMatch, RouteTable,
};
use crate::policy::trace::Trace;
use crate::policy::{
    AuthContext, Authorized, CheckOutcome, Denied, DeniedFacts, KeySource, RequestView, TokenCache,
};

/// What a door knows of the original request: plain data, built by the
/// proxy glue from the pingora request, by `explain` from its arguments and
/// by the authorization endpoints from their caller's conventions.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub version: Version,
    /// The request target as received: path and query, undecoded.
    pub target: &'a [u8],
    /// The authority of an absolute-form target, used when no `Host` came.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The body, once read: `None` until a route that binds it asks
    /// ([`Verdict::NeedBody`]).
    pub body: Option<RequestBody<'a>>,
}

/// One configuration generation as the decision reads it.
#[derive(Clone, Copy)]
pub struct Generation<'a> {
    pub config: &'a Config,
    pub routes: &'a RouteTable,
    pub keys: &'a dyn KeySource,
}

/// How a door wants the token checked.
#[derive(Clone, Copy)]
pub struct Checking<'a> {
    pub now: UnixTime,
    /// The shared verified-token cache; `None` verifies every signature.
    pub cache: Option<&'a TokenCache>,
    /// `false` only for `explain --no-verify`: checks 7-9 are skipped.
    pub verify_signature: bool,
    /// `false` once the door refetched keys for this request: an unknown
    /// kid is then a plain denial, never another [`Verdict::NeedKeys`].
    pub may_refetch: bool,
}

/// The route a request was decided on, and how it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Index into the generation's routes.
    pub route: usize,
    /// The request's host as received (for `X-Forwarded-Host`); `None` for
    /// an HTTP/1.0 request without one.
    pub host: Option<HeaderValue>,
    /// Path and query to forward (normalised, prefix stripped) when they
    /// differ from what the client sent; `None` forwards them untouched.
    pub forward_uri: Option<String>,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    /// The route, when checks 1 got that far (405 and later).
    pub route: Option<usize>,
    /// The `Allow` header of a 405 from check 2.
    pub allow: Option<String>,
    /// What a verified token said, for the audit line.
    pub facts: DeniedFacts,
    /// The request's framing is in doubt (check 0): do not reuse the
    /// connection after answering.
    pub close_connection: bool,
}

impl Refusal {
    fn new(reason: Reason) -> Self {
        Refusal {
            reason,
            route: None,
            allow: None,
            facts: DeniedFacts::default(),
            close_connection: false,
        }
    }
}

/// The outcome of [`decide`]. Returned once per request and taken apart at
/// once, so `Allow` stays unboxed: a box would cost the hot path an
/// allocation to save a move.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Verdict {
    /// Forward, with these verified facts as `X-Consent-*` headers.
    Allow {
        routed: Routed,
        authorized: Authorized,
    },
    /// `mode: report_only`: would have been denied; forwarded anyway,
    /// without `X-Consent-*` headers.
    ShadowDeny { routed: Routed, denied: Refusal },
    /// Answer with this refusal; nothing goes upstream.
    Deny(Refusal),
    /// The token's `kid` is not in the issuer's key set: the door refetches
    /// that issuer's JWKS once (single-flight, rate limited) and, if the
    /// key set changed, decides again with `may_refetch: false`; otherwise
    /// it takes `otherwise`.
    NeedKeys {
        issuer: usize,
        kid: String,
        otherwise: Box<Verdict>,
    },
    /// The route binds the body: the door reads it (at most `limit + 1`
    /// bytes, so a larger one is known to be too large) and decides again
    /// with `RequestFacts::body` set.
    NeedBody { limit: usize },
}

impl Verdict {
    /// The reason code, as metrics and the audit log name it.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Verdict::Allow { .. } => None,
            Verdict::ShadowDeny { denied, .. } | Verdict::Deny(denied) => Some(denied.reason),
            Verdict::NeedKeys { otherwise, .. } => otherwise.reason(),
            Verdict::NeedBody { .. } => None,
        }
    }
}

/// Checks 0-21 for one request, the first failing check deciding, then the
/// report-only rule. With `trace`, one `CheckOutcome` per check evaluated.
pub fn decide(
    facts: &RequestFacts<'_>,
    generation: &Generation<'_>,
    checking: &Checking<'_>,
    trace: Option<&mut Vec<CheckOutcome>>,
) -> Verdict {
    let mut trace = Trace::new(trace);
    let request = match check_request(facts, generation.config, &mut trace) {
        Ok(request) => request,
        Err(refusal) => return Verdict::Deny(refusal),
    };
    let (route_index, params) = match route_request(&request, facts, generation, &mut trace) {
        Ok(found) => found,
        Err(refusal) => return Verdict::Deny(refusal),
    };
    let route = &generation.config.routes[route_index];
    let refuse = |reason: Reason, facts: DeniedFacts| Refusal {
        route: Some(route_index),
        facts,
        ..Refusal::new(reason)
    };
    if let Some(rule) = route.auth.consent.as_ref() {
        let bound_headers = rule
            .subject
            .iter()
            .chain(rule.metadata_match.iter().map(|(_, b)| b));
        if let Some(name) = connection_names_bound_header(facts.headers, bound_headers) {
            trace.record(0, "bound_values", false, || {
                format!("Connection names {name}, which the route binds")
            });
            let mut refusal = refuse(Reason::InvalidRequest, DeniedFacts::default());
            refusal.close_connection = true;
            return Verdict::Deny(refusal);
        }
    }

    let parsed_body = match read_bound_body(facts, route, &mut trace) {
        Ok(BodyStep::Parsed(parsed)) => Some(parsed),
        Ok(BodyStep::NotBound) => None,
        Ok(BodyStep::Need(limit)) => return Verdict::NeedBody { limit },
        Err(reason) => return Verdict::Deny(refuse(reason, DeniedFacts::default())),
    };
    let view = RequestView {
        headers: facts.headers,
        query: request.query,
        path_params: &params,
        body: parsed_body.as_ref(),
    };
    let auth_ctx = AuthContext {
        route: &route.auth,
        issuers: &generation.config.issuers,
        max_token_bytes: generation.config.server.max_token_bytes,
        keys: generation.keys,
        now: checking.now,
        cache: checking.cache,
    };
    let outcome = check_token(&auth_ctx, &view, checking.verify_signature, &mut trace);
    let routed = || Routed {
        route: route_index,
        host: request.host.clone(),
        forward_uri: forward_uri(&request, route.strip_prefix.as_deref()),
    };
    match outcome {
        Ok(authorized) => Verdict::Allow {
            routed: routed(),
            authorized,
        },
        Err(Denied {
            reason,
            refetch,
            facts,
        }) => {
            let refusal = refuse(reason, facts);
            let shadow =
                route.mode == Mode::ReportOnly && matches!(reason.status(), 401 | 403 | 503);
            let verdict = if shadow {
                Verdict::ShadowDeny {
                    routed: routed(),
                    denied: refusal,
                }
            } else {
                Verdict::Deny(refusal)
            };
            match refetch {
                Some((issuer, kid)) if checking.may_refetch => Verdict::NeedKeys {
                    issuer,
                    kid,
                    otherwise: Box::new(verdict),
                },
                _ => verdict,
            }
        }
    }
}

enum BodyStep<'a> {
    NotBound,
    Need(usize),
    Parsed(ParsedBody<'a>),
}

/// The body of a route whose bindings read it, checked and parsed before
/// any token check (like a bound value given twice, a bad body is the
/// request's fault whatever the token says).
fn read_bound_body<'a>(
    facts: &RequestFacts<'a>,
    route: &Route,
    trace: &mut Trace<'_>,
) -> Result<BodyStep<'a>, Reason> {
    let (Some(kind), Some(limit)) = (
        route.auth.consent.as_ref().and_then(body::bound_kind),
        route.max_body_bytes,
    ) else {
        return Ok(BodyStep::NotBound);
    };
    let body = match facts.body {
        None => return Ok(BodyStep::Need(limit)),
        Some(RequestBody::Complete(bytes)) if bytes.len() > limit => RequestBody::TooLarge,
        Some(body) => body,
    };
    match body::parse(facts.headers, body, kind) {
        Ok(parsed) => {
            trace.record(0, "body", true, || {
                format!("a {kind:?} body the route binds")
            });
            Ok(BodyStep::Parsed(parsed))
        }
        Err((reason, why)) => {
            trace.record(0, "body", false, || why);
            Err(reason)
        }
    }
}

/// A request that passed check 0.
struct CheckedRequest<'a> {
    host: Option<HeaderValue>,
    /// The normalised path.
    path: Cow<'a, str>,
    query: Option<&'a str>,
    /// The client's path and query can go upstream as they came.
    target_unchanged: bool,
}

/// Check 0: well-formed HTTP (not `CONNECT`, one `Host`, a valid host,
/// acceptable `Connection` options, the header block within limits, a path
/// that normalises).
fn check_request<'a>(
    facts: &RequestFacts<'a>,
    config: &Config,
    trace: &mut Trace<'_>,
) -> Result<CheckedRequest<'a>, Refusal> {
    let fail = |trace: &mut Trace<'_>, reason: Reason, close: bool, why: &str| {
        trace.record(0, "well-formed request", false, || why.to_string());
        Refusal {
            close_connection: close,
            ..Refusal::new(reason)
        }
    };
    if facts.method == Method::CONNECT {
        return Err(fail(trace, Reason::MethodNotAllowed, true, "CONNECT"));
    }
    let host = match request_host(facts) {
        Ok(host) => host,
        Err(why) => return Err(fail(trace, Reason::InvalidRequest, true, why)),
    };
    let host_ok = host
        .as_ref()
        .map_or(Ok(""), HeaderValue::to_str)
        .is_ok_and(is_valid_host);
    if !host_ok {
        return Err(fail(
            trace,
            Reason::InvalidRequest,
            true,
            "not a valid host",
        ));
    }
    if !connection_is_acceptable(facts.headers) {
        let why = "Connection options that cannot be honoured";
        return Err(fail(trace, Reason::InvalidRequest, true, why));
    }
    let limit = config.server.limits.max_request_header_bytes;
    let mut size = facts.method.as_str().len() + facts.target.len() + 12;
    for (name, value) in facts.headers.iter() {
        size += name.as_str().len() + value.len() + 4;
    }
    if size > limit {
        let why = format!("header block of {size} bytes > {limit}");
        return Err(fail(trace, Reason::HeadersTooLarge, false, &why));
    }
    let Ok(target) = std::str::from_utf8(facts.target) else {
        let why = "the request target is not UTF-8";
        return Err(fail(trace, Reason::InvalidRequest, false, why));
    };
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = match normalize_path(raw_path) {
        Ok(path) => path,
        Err(e) => {
            let why = format!("path: {e:?}");
            return Err(fail(trace, Reason::InvalidRequest, false, &why));
        }
    };
    // A `#` would be dropped by `Uri`: such a target is forwarded rebuilt.
    let target_unchanged = !target.contains('#') && *path == *raw_path;
    trace.record(0, "well-formed request", true, || {
        format!("normalised path {path}")
    });
    Ok(CheckedRequest {
        host,
        path,
        query,
        target_unchanged,
    })
}

/// The one `Host` (or an absolute-form target's authority); `None` only for
/// HTTP/1.0 without either.
fn request_host(facts: &RequestFacts<'_>) -> Result<Option<HeaderValue>, &'static str> {
    let mut hosts = facts.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err("more than one Host"),
        (Some(host), None) => Ok(Some(host.clone())),
        (None, _) => match facts.authority {
            Some(authority) => HeaderValue::from_str(authority)
                .map(Some)
                .map_err(|_| "not a valid authority"),
            None if facts.version == Version::HTTP_10 => Ok(None),
            None => Err("no Host"),
        },
    }
}

/// Checks 1-2: the route for host + path, then the method.
fn route_request(
    request: &CheckedRequest<'_>,
    facts: &RequestFacts<'_>,
    generation: &Generation<'_>,
    trace: &mut Trace<'_>,
) -> Result<(usize, Vec<(String, String)>), Refusal> {
    let host = request
        .host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let host = host_without_port(host);
    let routes = &generation.config.routes;
    match generation
        .routes
        .find(&host, &request.path, facts.method.as_str())
    {
        RouteMatch::Found { route, params } => {
            trace.record(1, "route", true, || {
                format!("{} ({})", routes[route].name, routes[route].path)
            });
            trace.record(2, "method", true, || facts.method.to_string());
            Ok((route, params))
        }
        RouteMatch::MethodNotAllowed { route, allow } => {
            trace.record(1, "route", true, || routes[route].name.clone());
            trace.record(2, "method", false, || format!("allowed: {allow}"));
            Err(Refusal {
                route: Some(route),
                allow: Some(allow),
                ..Refusal::new(Reason::MethodNotAllowed)
            })
        }
        RouteMatch::NotFound => {
            trace.record(1, "route", false, || {
                format!("no route for {host}{}", request.path)
            });
            Err(Refusal::new(Reason::NoRoute))
        }
    }
}

/// A header the route binds that `Connection` names: it would be checked,
/// then removed as hop-by-hop, so the backend would never see what was
/// checked (SPEC section 13, "Connections").
fn connection_names_bound_header<'b>(
    headers: &HeaderMap,
    bindings: impl Iterator<Item = &'b Binding>,
) -> Option<String> {
    let named: Vec<&[u8]> = list_items(headers, http::header::CONNECTION).collect();
    if named.is_empty() {
        return None;
    }
    bindings.into_iter().find_map(|binding| match binding {
        Binding::Header(name)
            if named
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_bytes())) =>
        {
            Some(name.clone())
        }
        _ => None,
    })
}

/// The path and query to send upstream, when not the client's own.
fn forward_uri(request: &CheckedRequest<'_>, prefix: Option<&str>) -> Option<String> {
    let path = match prefix {
        None if request.target_unchanged => return None,
        Some(prefix) => strip_prefix(&request.path, prefix),
        None => request.path.to_string(),
    };
    Some(match request.query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}
