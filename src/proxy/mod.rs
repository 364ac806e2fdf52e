//! pingora glue only: the `ProxyHttp` implementation. It decides once in
//! `request_filter` (checks 0-2 here, 3-21 in `policy::auth`), keeps the
//! outcome in the per-request context, and reads it in the later phases.

pub mod guard;
pub mod http1;
pub mod request_id;
pub mod respond;
pub mod upstream;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::header::HeaderValue;
use pingora_core::modules::http::HttpModules;
use pingora_core::prelude::*;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::audit;
use crate::config::Mode;
use crate::error::Reason;
use crate::gateway::{Gateway, Snapshot};
use crate::metrics::{NO_ROUTE_LABEL, UPSTREAM_CLASSES};
use crate::policy::auth::authorize;
use crate::policy::forward::{verified_headers, VerifiedName};
use crate::policy::headers::{connection_is_acceptable, headers_to_strip};
use crate::policy::routes::{
    host_without_port, is_valid_host, normalize_path, strip_prefix, RouteMatch,
};
use crate::policy::{AuthContext, Authorized, DeniedFacts, RequestView};
use crate::trace_context::TraceContext;
use request_id::RequestId;

/// The request's trace context: honoured or started once, then kept.
fn trace_of<'c>(session: &Session, ctx: &'c mut RequestCtx) -> &'c TraceContext {
    ctx.trace.get_or_insert_with(|| {
        let headers = &session.req_header().headers;
        TraceContext::from_headers(
            headers.get("traceparent").map(HeaderValue::as_bytes),
            headers.get("tracestate").map(HeaderValue::as_bytes),
            TraceContext::random(),
        )
    })
}

/// What was decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Reason),
    /// `report_only`: would have been denied; proxied anyway.
    ShadowDeny(Reason),
}

/// Per-request state, created by `new_ctx` and read by every later phase.
pub struct RequestCtx {
    start: Instant,
    pub request_id: RequestId,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    params: Vec<(String, String)>,
    /// Path and query to forward (normalised, prefix stripped), when they
    /// differ from what the client sent.
    forward_uri: Option<String>,
    /// The request's host as received (for `X-Forwarded-Host`); none for an
    /// HTTP/1.0 request without one.
    original_host: Option<HeaderValue>,
    pub decision: Option<Decision>,
    authorized: Option<Authorized>,
    denied_facts: DeniedFacts,
    upstream_error: Option<Reason>,
    upstream_status: Option<u16>,
    /// Targets whose connect failed for this request (passive failover).
    failed_targets: Vec<upstream::PeerAddr>,
    /// The W3C trace context, taken from the request on first use.
    trace: Option<TraceContext>,
}

impl RequestCtx {
    fn route_name(&self) -> &str {
        match (&self.snapshot, self.route) {
            (Some(s), Some(r)) => &s.config.routes[r].name,
            _ => NO_ROUTE_LABEL,
        }
    }
}

/// The consent gateway proxy.
pub struct ConsentProxy {
    pub gateway: Arc<Gateway>,
}

impl ConsentProxy {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    /// Refuses the request with a problem response and records the decision.
    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        reason: Reason,
        allow: Option<&str>,
    ) -> Result<bool> {
        ctx.decision = Some(Decision::Deny(reason));
        if session.is_upgrade_req() {
            // The client expected a protocol switch: end the exchange here.
            session.set_keepalive(None);
        }
        respond::problem(session, &ctx.request_id, reason, allow).await?;
        Ok(true)
    }

    /// Check 0: well-formed HTTP. Returns the host to route on, as received
    /// (a shared copy of the client's `Host` value), or none for an HTTP/1.0
    /// request without one.
    fn check_request(
        &self,
        req: &RequestHeader,
        snapshot: &Snapshot,
    ) -> std::result::Result<Option<HeaderValue>, Reason> {
        if req.method == http::Method::CONNECT {
            return Err(Reason::MethodNotAllowed);
        }
        let mut hosts = req.headers.get_all(http::header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => return Err(Reason::InvalidRequest),
            (Some(h), None) => Some(h.clone()),
            (None, _) => match req.uri.authority() {
                Some(a) => {
                    Some(HeaderValue::from_str(a.as_str()).map_err(|_| Reason::InvalidRequest)?)
                }
                None if req.version == http::Version::HTTP_10 => None,
                None => return Err(Reason::InvalidRequest),
            },
        };
        let host_str = host_str(host.as_ref()).map_err(|_| Reason::InvalidRequest)?;
        if !is_valid_host(host_str) || !connection_is_acceptable(&req.headers) {
            return Err(Reason::InvalidRequest);
        }
        let limit = snapshot.config.server.limits.max_request_header_bytes;
        let mut size = req.method.as_str().len() + req.raw_path().len() + 12;
        for (name, value) in req.headers.iter() {
            size += name.as_str().len() + value.len() + 4;
        }
        if size > limit {
            return Err(Reason::HeadersTooLarge);
        }
        Ok(host)
    }
}

/// Whether a downstream error is a request body pingora could not read as
/// framed (a bad chunk, a trailer, a body cut short), not a vanished client.
fn is_bad_request_body(etype: &ErrorType) -> bool {
    // pingora-core's `protocols/http/v1/body.rs` names these, crate-private.
    const BODY_ERRORS: [&str; 3] = ["InvalidChunk", "InvalidTrailerEnd", "PrematureBodyEnd"];
    match etype {
        ErrorType::Custom(name) => BODY_ERRORS.contains(name),
        ErrorType::InvalidHTTPHeader => true,
        _ => false,
    }
}

/// Sends a request's `Content-Length` once: pingora accepts identical
/// duplicates (`5`, `5` or `5, 5`) but forwards them as they came, where RFC
/// 9112 section 6.3 asks for one value (differing ones never get here).
fn collapse_content_length(req: &mut RequestHeader) -> Result<()> {
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (Some(first), second) = (values.next(), values.next()) else {
        return Ok(());
    };
    if second.is_none() && !first.as_bytes().contains(&b',') {
        return Ok(());
    }
    let one = String::from_utf8_lossy(first.as_bytes())
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    req.insert_header(http::header::CONTENT_LENGTH, one)?;
    Ok(())
}

/// The host to route on: an HTTP/1.0 request without one routes as "".
fn host_str(host: Option<&HeaderValue>) -> std::result::Result<&str, http::header::ToStrError> {
    host.map_or(Ok(""), HeaderValue::to_str)
}

#[async_trait]
impl ProxyHttp for ConsentProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: RequestId::from_static("-"),
            snapshot: None,
            route: None,
            params: Vec::new(),
            forward_uri: None,
            original_host: None,
            decision: None,
            authorized: None,
            denied_facts: DeniedFacts::default(),
            upstream_error: None,
            upstream_status: None,
            failed_targets: Vec::new(),
            trace: None,
        }
    }

    /// Runs before `request_filter`, once the request header is read: the
    /// connection behaviours section 13 asks of HTTP/1 (pingora's defaults
    /// differ). Pipelined requests are answered in order, not dropped with
    /// the connection; a client that half-closes after its request still
    /// gets the answer instead of an abort.
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        let downstream = &mut session.downstream_session;
        downstream.set_pipelining_enabled(true);
        downstream.set_abort_on_close(false);
        Ok(())
    }

    /// No downstream modules: the gateway never compresses responses, so
    /// pingora's default (a compression module, disabled, built and called
    /// for every request) is left out.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Runs once the request header is read. Decides allow or deny for the
    /// whole request. `Ok(true)`: a response was written, stop here;
    /// `Ok(false)`: proxy to the upstream.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.gateway.snapshot();
        ctx.snapshot = Some(Arc::clone(&snapshot));
        let req = session.req_header();
        ctx.request_id = RequestId::for_request(&req.headers);

        // Check 0.
        let host = match self.check_request(req, &snapshot) {
            Ok(h) => h,
            Err(reason) => {
                if reason == Reason::MethodNotAllowed || reason == Reason::InvalidRequest {
                    session.set_keepalive(None);
                }
                return self.refuse(session, ctx, reason, None).await;
            }
        };
        let raw = String::from_utf8_lossy(req.raw_path());
        let (raw_path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (&*raw, None),
        };
        let normalized = normalize_path(raw_path);
        // Sent on as it came (no `set_uri`) when it was valid UTF-8 and
        // normalisation did not change it; a `#` would be dropped by `Uri`.
        let path_unchanged = matches!(raw, Cow::Borrowed(_))
            && match &normalized {
                // Borrowed: already in normal form.
                Ok(Cow::Borrowed(_)) => true,
                Ok(Cow::Owned(p)) => p == raw_path,
                Err(_) => false,
            }
            && !raw.contains('#');
        let path = match normalized {
            Ok(p) => p,
            Err(_) => {
                return self
                    .refuse(session, ctx, Reason::InvalidRequest, None)
                    .await
            }
        };

        // Checks 1-2. `check_request` accepted only a host that is a valid
        // string; should that ever change, refuse rather than route on "".
        let Ok(host_str) = host_str(host.as_ref()) else {
            return self
                .refuse(session, ctx, Reason::InvalidRequest, None)
                .await;
        };
        let route_host = host_without_port(host_str);
        let method = req.method.as_str();
        let (route_index, params) = match snapshot.routes.find(&route_host, &path, method) {
            RouteMatch::Found { route, params } => (route, params),
            RouteMatch::MethodNotAllowed { route, allow } => {
                ctx.route = Some(route);
                return self
                    .refuse(session, ctx, Reason::MethodNotAllowed, Some(&allow))
                    .await;
            }
            RouteMatch::NotFound => return self.refuse(session, ctx, Reason::NoRoute, None).await,
        };
        ctx.route = Some(route_index);
        ctx.original_host = host;
        let route = &snapshot.config.routes[route_index];

        // Checks 3-21, on the pure core.
        let verdict = {
            let view = RequestView {
                headers: &session.req_header().headers,
                query: query.as_deref(),
                path_params: &params,
            };
            let mut attempt = 0;
            loop {
                let started = Instant::now();
                // The context borrows non-Sync trait objects: keep it out of
                // the await below.
                let outcome = {
                    let auth_ctx = AuthContext {
                        route: &route.auth,
                        issuers: &snapshot.config.issuers,
                        max_token_bytes: snapshot.config.server.max_token_bytes,
                        keys: snapshot.as_ref(),
                        cache: Some(&self.gateway.token_cache),
                        now: self.gateway.clock.now(),
                    };
                    authorize(&auth_ctx, &view, None)
                };
                self.gateway
                    .metrics
                    .decision_duration_seconds
                    .observe(started.elapsed().as_secs_f64());
                match outcome {
                    Err(denied) if attempt == 0 && denied.refetch.is_some() => {
                        attempt += 1;
                        let (issuer, kid) = denied.refetch.clone().unwrap_or_default();
                        let refetched = match snapshot.issuer_keys.get(issuer) {
                            Some(keys) => keys.refetch_for_unknown_kid(&kid).await,
                            None => false,
                        };
                        if !refetched {
                            break Err(denied);
                        }
                    }
                    other => break other,
                }
            }
        };
        ctx.params = params;

        match verdict {
            Ok(authorized) => {
                ctx.decision = Some(Decision::Allow);
                ctx.authorized = Some(authorized);
            }
            Err(denied) => {
                ctx.denied_facts = denied.facts;
                let shadow = route.mode == Mode::ReportOnly
                    && matches!(denied.reason.status(), 401 | 403 | 503);
                if shadow {
                    ctx.decision = Some(Decision::ShadowDeny(denied.reason));
                } else {
                    return self.refuse(session, ctx, denied.reason, None).await;
                }
            }
        }

        // The client's own path and query go upstream untouched when
        // normalisation and `strip_prefix` left them as they were.
        ctx.forward_uri = match &route.strip_prefix {
            None if path_unchanged => None,
            Some(prefix) => Some(strip_prefix(&path, prefix)),
            None => Some(path.into_owned()),
        }
        .map(|forward_path| match &query {
            Some(q) => format!("{forward_path}?{q}"),
            None => forward_path,
        });
        Ok(false)
    }

    /// Picks a healthy target of the route's upstream (round robin), never
    /// one whose connect already failed for this request.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(snapshot), Some(route)) = (&ctx.snapshot, ctx.route) else {
            return Error::e_explain(ErrorType::InternalError, "no route decided");
        };
        let pool = &snapshot.upstreams[snapshot.config.routes[route].upstream];
        match pool.select_peer_avoiding(&ctx.failed_targets) {
            Some(peer) => Ok(Box::new(peer)),
            None => {
                let mut e = Error::explain(ErrorType::ConnectNoRoute, "no healthy target");
                e.esource = ErrorSource::Upstream;
                Err(e)
            }
        }
    }

    /// Runs when a connect to the chosen target failed (nothing was sent):
    /// retried on another target while the request has tries left.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.failed_targets.push(peer._address.clone());
        let tries = match (&ctx.snapshot, ctx.route) {
            (Some(s), Some(r)) => s.upstreams[s.config.routes[r].upstream].connect_tries(),
            _ => 1,
        };
        e.set_retry(ctx.failed_targets.len() < tries);
        e
    }

    /// Runs on the copy of the request sent upstream: strips every header
    /// that could pass for a verified one, then sets the verified facts.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let genuine_upgrade = session.is_upgrade_req();
        for name in headers_to_strip(&upstream_request.headers, genuine_upgrade) {
            upstream_request.remove_header(&name);
        }
        collapse_content_length(upstream_request)?;
        if let Some(uri) = &ctx.forward_uri {
            let uri = uri
                .parse::<http::Uri>()
                .or_err(ErrorType::InternalError, "forward uri")?;
            upstream_request.set_uri(uri);
        }
        let (Some(snapshot), Some(route)) = (&ctx.snapshot, ctx.route) else {
            return Error::e_explain(ErrorType::InternalError, "no route decided");
        };
        let route = &snapshot.config.routes[route];
        if route.forward.strip_authorization {
            upstream_request.remove_header(&http::header::AUTHORIZATION);
        }
        if !route.forward.preserve_host {
            let pool = &snapshot.upstreams[route.upstream];
            upstream_request.insert_header(http::header::HOST, pool.host_header.clone())?;
        }
        // X-Forwarded-*: For is appended to, Proto and Host overwritten.
        if let Some(addr) = session.client_addr().and_then(SocketAddr::as_inet) {
            let ip = addr.ip().to_string();
            let value = match upstream_request.headers.get("x-forwarded-for") {
                Some(prev) => format!("{}, {ip}", String::from_utf8_lossy(prev.as_bytes())),
                None => ip,
            };
            upstream_request.insert_header("x-forwarded-for", value)?;
        }
        let proto = if session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some()
        {
            "https"
        } else {
            "http"
        };
        upstream_request.insert_header("x-forwarded-proto", HeaderValue::from_static(proto))?;
        // An HTTP/1.0 request may come without a host: then no client-sent
        // value may pass for the gateway's.
        match &ctx.original_host {
            Some(h) => upstream_request.insert_header("x-forwarded-host", h.clone())?,
            None => {
                upstream_request.remove_header("x-forwarded-host");
            }
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.header())?;
        let trace = trace_of(session, ctx);
        upstream_request.insert_header("traceparent", trace.traceparent())?;
        match &trace.tracestate {
            Some(state) => upstream_request.insert_header("tracestate", state.clone())?,
            None => {
                upstream_request.remove_header("tracestate");
            }
        }
        if ctx.decision == Some(Decision::Allow) {
            if let Some(authorized) = &ctx.authorized {
                // `&'static str` names are taken by pingora without a copy.
                for (name, value) in verified_headers(authorized) {
                    match name {
                        VerifiedName::Fixed(name) => upstream_request.insert_header(name, value)?,
                        VerifiedName::Metadata(name) => {
                            upstream_request.insert_header(name, value)?
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs on the upstream's response header before it goes to the client.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_status = Some(upstream_response.status.as_u16());
        upstream_response.insert_header("x-request-id", ctx.request_id.header())?;
        Ok(())
    }

    /// Runs when proxying failed: 502 `upstream_unavailable` or 504
    /// `upstream_timeout`, as problem+json; 400 `invalid_request` for a
    /// request body whose framing broke after the head went upstream. The
    /// connection is not reused after any of them, so the answer says
    /// `Connection: close` (pingora would say `keep-alive`, then close).
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let reason = match (e.esource(), e.etype()) {
            (ErrorSource::Downstream, t) if is_bad_request_body(t) => Some(Reason::InvalidRequest),
            (ErrorSource::Downstream, _) => None,
            (
                _,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Reason::UpstreamTimeout),
            (_, ErrorType::HTTPStatus(_)) => None,
            _ => Some(Reason::UpstreamUnavailable),
        };
        let code = match reason {
            Some(reason) => {
                if reason != Reason::InvalidRequest {
                    ctx.upstream_error = Some(reason);
                }
                session.set_keepalive(None);
                if session.response_written().is_none() {
                    if let Err(err) = respond::problem(session, &ctx.request_id, reason, None).await
                    {
                        log::debug!("could not answer the client: {err}");
                    }
                }
                reason.status()
            }
            None => 0,
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// Runs last, for every request: metrics and the audit line.
    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx
            .snapshot
            .as_ref()
            .is_some_and(|s| s.config.audit.enabled)
        {
            // The audit line's `trace_id` (a denial never reached upstream).
            trace_of(session, ctx);
        }
        let metrics = &self.gateway.metrics;
        let route = ctx.route_name();
        let (decision, reason) = match &ctx.decision {
            Some(Decision::Allow) | None => ("allow", "ok"),
            Some(Decision::Deny(r)) => ("deny", r.code()),
            Some(Decision::ShadowDeny(r)) => ("shadow_deny", r.code()),
        };
        if ctx.decision.is_none() {
            // Nothing was decided (the client went away first).
            return;
        }
        // The route's own series, resolved once per configuration generation.
        let route_metrics = match (&ctx.snapshot, ctx.route) {
            (Some(snapshot), Some(r)) => snapshot.route_metrics.get(r),
            _ => None,
        };
        let elapsed = ctx.start.elapsed().as_secs_f64();
        match route_metrics.filter(|_| ctx.decision == Some(Decision::Allow)) {
            Some(series) => series.allowed(metrics, route).inc(),
            None => metrics
                .requests_total
                .with_label_values(&[route, decision, reason])
                .inc(),
        }
        match route_metrics {
            Some(series) => series.duration(metrics, route).observe(elapsed),
            None => metrics
                .request_duration_seconds
                .with_label_values(&[route])
                .observe(elapsed),
        }
        if ctx.route.is_none() {
            metrics.http_errors_total.with_label_values(&[reason]).inc();
        }
        if matches!(
            ctx.decision,
            Some(Decision::Allow) | Some(Decision::ShadowDeny(_))
        ) {
            // An index into `UPSTREAM_CLASSES`.
            let class = match (ctx.upstream_error, ctx.upstream_status) {
                (Some(_), _) | (None, None) => 5,
                (None, Some(s)) => usize::from((s / 100).clamp(1, 5)) - 1,
            };
            match route_metrics {
                Some(series) => series.upstream(metrics, route, class).inc(),
                None => metrics
                    .upstream_responses_total
                    .with_label_values(&[route, UPSTREAM_CLASSES[class]])
                    .inc(),
            }
        }
        if let Some(snapshot) = &ctx.snapshot {
            if snapshot.config.audit.enabled {
                let status = session.response_written().map_or(0, |r| r.status.as_u16());
                let template = ctx.route.map(|r| snapshot.config.routes[r].path.as_str());
                let line = audit::AuditLine {
                    ts: std::time::SystemTime::now(),
                    request_id: ctx.request_id.as_str(),
                    route,
                    method: session.req_header().method.as_str(),
                    path: template.unwrap_or("-"),
                    decision,
                    reason,
                    status,
                    authorized: ctx.authorized.as_ref(),
                    denied: &ctx.denied_facts,
                    duration_ms: ctx.start.elapsed().as_secs_f64() * 1000.0,
                    trace_id: ctx.trace.as_ref().map(|t| t.trace_id.as_str()),
                };
                audit::emit(&line, &snapshot.config.audit);
            }
        }
    }
}
