//! pingora glue only: the `ProxyHttp` implementation. It decides once in
//! `request_filter` (checks 0-21 in `policy::decide`, answering its call
//! for keys with one refetch), keeps the verdict in the per-request context,
//! and reads it in the later phases.

pub mod guard;
pub mod http1;
pub mod request_id;
pub mod respond;

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
use crate::otlp;
use crate::policy::body::RequestBody;
use crate::policy::forward::{verified_headers, VerifiedName};
use crate::policy::headers::headers_to_strip;
use crate::policy::{Authorized, DeniedFacts, RequestFacts, Routed, Verdict};
use crate::state;
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
    /// How an allowed (or shadow-denied) request goes upstream.
    routed: Option<Routed>,
    pub decision: Option<Decision>,
    authorized: Option<Authorized>,
    denied_facts: DeniedFacts,
    upstream_error: Option<Reason>,
    upstream_status: Option<u16>,
    /// Targets whose connect failed for this request (passive failover).
    failed_targets: Vec<crate::upstream::PeerAddr>,
    /// The W3C trace context, taken from the request on first use.
    trace: Option<TraceContext>,
    /// The upstream call's span, when spans are exported.
    upstream_call: Option<otlp::UpstreamCall>,
    /// The one-time consent this request used (given back on an upstream
    /// failure before any response byte).
    claim: Option<state::Claim>,
    /// The rate limit's state after this request, for the headers.
    rate: Option<state::RateInfo>,
    /// The body was read to decide (a route that binds it): pingora sends
    /// it from its buffer, and `Expect` is not forwarded.
    body_buffered: bool,
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
        respond::problem(session, ctx, reason, allow).await?;
        Ok(true)
    }

    /// Carries out the final verdict of `request_filter`: an allow passes
    /// the shared state (rate limit, one-time use) before going upstream.
    /// `Ok(true)`: a refusal was written.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        verdict: Verdict,
    ) -> Result<bool> {
        match verdict {
            Verdict::Allow { routed, authorized } => {
                ctx.decision = Some(Decision::Allow);
                ctx.authorized = Some(authorized);
                ctx.route = Some(routed.route);
                let route = routed.route;
                ctx.routed = Some(routed);
                match self.admit_state(snapshot, ctx, route).await {
                    Some(reason) => self.refuse(session, ctx, reason, None).await,
                    None => Ok(false),
                }
            }
            Verdict::ShadowDeny { routed, denied } => {
                ctx.decision = Some(Decision::ShadowDeny(denied.reason));
                ctx.denied_facts = denied.facts;
                ctx.route = Some(routed.route);
                ctx.routed = Some(routed);
                Ok(false)
            }
            Verdict::Deny(refusal) => {
                if refusal.close_connection {
                    session.set_keepalive(None);
                }
                ctx.route = refusal.route;
                ctx.denied_facts = refusal.facts;
                self.refuse(session, ctx, refusal.reason, refusal.allow.as_deref())
                    .await
            }
            Verdict::NeedKeys { .. } | Verdict::NeedBody { .. } => {
                // The loop above ends on neither; fail closed regardless.
                self.refuse(session, ctx, Reason::InvalidRequest, None)
                    .await
            }
        }
    }

    /// After an allow verdict: the route's rate limit and one-time use
    /// (SPEC section 13). `Some(reason)`: refused (shadow-denied on a
    /// `report_only` route, which then goes upstream).
    async fn admit_state(
        &self,
        snapshot: &Snapshot,
        ctx: &mut RequestCtx,
        route: usize,
    ) -> Option<Reason> {
        let route = &snapshot.config.routes[route];
        let authorized = ctx.authorized.as_ref()?;
        let admission = self.gateway.admit(snapshot, route, authorized).await;
        ctx.claim = admission.claim;
        ctx.rate = admission.rate;
        let reason = admission.refused?;
        if route.mode == Mode::ReportOnly {
            ctx.decision = Some(Decision::ShadowDeny(reason));
            return None;
        }
        Some(reason)
    }

    /// Gives a one-time consent back: the upstream failed before any
    /// response byte.
    async fn give_back(&self, ctx: &mut RequestCtx) {
        let (Some(claim), Some(snapshot)) = (ctx.claim.take(), &ctx.snapshot) else {
            return;
        };
        let metrics = &self.gateway.metrics;
        if let Err(e) = snapshot
            .store
            .give_back(metrics, &claim.key, &claim.token)
            .await
        {
            log::warn!("could not give a one-time consent back: {e:?}");
        }
    }
}

/// Reads the body of a route that binds it, up to `limit + 1` bytes (so a
/// larger one is known to be too large). pingora keeps what was read in its
/// retry buffer (at most 64 KiB, the ceiling of `max_body_bytes`) and sends
/// it upstream byte for byte. A client that asked for `100-continue` is
/// told to go on first.
async fn read_bound_body(session: &mut Session, limit: usize) -> Result<Vec<u8>> {
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session.downstream_session.write_continue_response().await?;
    }
    session.enable_retry_buffering();
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            break;
        }
    }
    Ok(body)
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

#[async_trait]
impl ProxyHttp for ConsentProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            request_id: RequestId::from_static("-"),
            snapshot: None,
            route: None,
            routed: None,
            decision: None,
            authorized: None,
            denied_facts: DeniedFacts::default(),
            upstream_error: None,
            upstream_status: None,
            failed_targets: Vec::new(),
            trace: None,
            upstream_call: None,
            claim: None,
            rate: None,
            body_buffered: false,
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
        ctx.request_id = RequestId::for_request(&session.req_header().headers);
        // Read only when the route binds it (`Verdict::NeedBody`).
        let mut body: Option<Vec<u8>> = None;
        let verdict = loop {
            let verdict = {
                let req = session.req_header();
                let facts = RequestFacts {
                    method: &req.method,
                    version: req.version,
                    target: req.raw_path(),
                    authority: req.uri.authority().map(http::uri::Authority::as_str),
                    headers: &req.headers,
                    body: body.as_deref().map(RequestBody::Complete),
                };
                self.gateway.decide(&snapshot, &facts).await
            };
            match verdict {
                Verdict::NeedBody { limit } if body.is_none() => {
                    match read_bound_body(session, limit).await {
                        Ok(read) => {
                            ctx.body_buffered = true;
                            if read.len() > limit {
                                // The rest is unread: do not reuse the connection.
                                session.set_keepalive(None);
                            }
                            body = Some(read);
                        }
                        Err(e) if is_bad_request_body(e.etype()) => {
                            session.set_keepalive(None);
                            return self
                                .refuse(session, ctx, Reason::InvalidRequest, None)
                                .await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                other => break other,
            }
        };
        self.answer(session, ctx, &snapshot, verdict).await
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
            Some(peer) => {
                if ctx.upstream_call.is_none() && otlp::exporter().is_some() {
                    let target = peer._address.to_string();
                    ctx.upstream_call = Some(otlp::UpstreamCall::start(target));
                }
                Ok(Box::new(peer))
            }
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
        // An HTTP/2 request may name its host in `:authority` alone: the
        // upstream gets, as `Host` (and pingora's `:authority` to an h2
        // upstream), the very value the route was decided on. pingora
        // refused a request whose `Host` and `:authority` disagree.
        if !upstream_request.headers.contains_key(http::header::HOST) {
            if let Some(host) = ctx.routed.as_ref().and_then(|r| r.host.clone()) {
                upstream_request.insert_header(http::header::HOST, host)?;
            }
        }
        for name in headers_to_strip(&upstream_request.headers, genuine_upgrade) {
            upstream_request.remove_header(&name);
        }
        collapse_content_length(upstream_request)?;
        if ctx.body_buffered {
            // The client was answered `100 Continue` already.
            upstream_request.remove_header(&http::header::EXPECT);
        }
        if let Some(uri) = ctx.routed.as_ref().and_then(|r| r.forward_uri.as_ref()) {
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
        if route.grpc {
            // The client's `TE` was stripped; the gateway itself takes the
            // upstream's trailers (gRPC servers may insist on hearing so).
            upstream_request.insert_header(http::header::TE, "trailers")?;
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
        match ctx.routed.as_ref().and_then(|r| r.host.as_ref()) {
            Some(h) => upstream_request.insert_header("x-forwarded-host", h.clone())?,
            None => {
                upstream_request.remove_header("x-forwarded-host");
            }
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.header())?;
        let call_span = ctx.upstream_call.as_ref().map(|c| c.span_id.clone());
        let trace = trace_of(session, ctx);
        let traceparent = match &call_span {
            Some(span_id) => trace.traceparent_for(span_id),
            None => trace.traceparent(),
        };
        upstream_request.insert_header("traceparent", traceparent)?;
        match &trace.tracestate {
            Some(state) => upstream_request.insert_header("tracestate", state.clone())?,
            None => {
                upstream_request.remove_header("tracestate");
            }
        }
        if ctx.decision == Some(Decision::Allow) {
            if let Some(authorized) = &ctx.authorized {
                // `&'static str` names are taken by pingora without a copy.
                for (name, value) in verified_headers(authorized).iter() {
                    match name {
                        VerifiedName::Fixed(name) => {
                            upstream_request.insert_header(*name, value.clone())?
                        }
                        VerifiedName::Metadata(name) => {
                            upstream_request.insert_header(name.clone(), value.clone())?
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
        if let Some(rate) = &ctx.rate {
            for (name, value) in rate.headers() {
                upstream_response.insert_header(name, value)?;
            }
        }
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
                    if ctx.upstream_status.is_none() {
                        self.give_back(ctx).await;
                    }
                }
                session.set_keepalive(None);
                if session.response_written().is_none() {
                    if let Err(err) = respond::problem(session, ctx, reason, None).await {
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
        let exporter = otlp::exporter();
        if exporter.is_some()
            || ctx
                .snapshot
                .as_ref()
                .is_some_and(|s| s.config.audit.enabled)
        {
            // The audit line's `trace_id` and the spans (a denial never
            // reached upstream).
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
        if let Some(exporter) = exporter {
            export_spans(exporter, session, ctx, decision, reason);
        }
    }
}

/// The request's server span and its upstream call's span, queued for
/// export (never waits).
fn export_spans(
    exporter: &otlp::Exporter,
    session: &Session,
    ctx: &mut RequestCtx,
    decision: &str,
    reason: &str,
) {
    let Some(trace) = &ctx.trace else {
        return;
    };
    let end = std::time::SystemTime::now();
    let start = end.checked_sub(ctx.start.elapsed()).unwrap_or(end);
    let upstream = ctx.upstream_call.take().map(|mut call| {
        call.status = ctx.upstream_status;
        call.error = ctx.upstream_error.map(Reason::code);
        call
    });
    let req = session.req_header();
    let protocol = match req.version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    };
    let tls = session.digest().and_then(|d| d.ssl_digest.as_ref());
    let route = match (&ctx.snapshot, ctx.route) {
        (Some(s), Some(r)) => Some((
            s.config.routes[r].name.as_str(),
            s.config.routes[r].path.as_str(),
        )),
        _ => None,
    };
    exporter.record(&otlp::RequestSpans {
        trace,
        start,
        end,
        method: req.method.as_str(),
        scheme: if tls.is_some() { "https" } else { "http" },
        protocol,
        route,
        decision,
        reason,
        status: session.response_written().map_or(0, |r| r.status.as_u16()),
        upstream,
    });
}
