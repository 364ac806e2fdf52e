//! The HTTP authorization listener (`server.authz.listen`), a pingora
//! `ServeHttp` app answering Envoy HTTP ext_authz, nginx `auth_request` and
//! Traefik ForwardAuth checks. Allow: 200 with the section 5 `X-Consent-*`
//! headers; deny: the proxy's own problem response (status, problem+json,
//! `WWW-Authenticate`), rendered by `proxy::respond`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, Response};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::facts::CheckRequest;
use super::{check, Answer, Checked, Protocol, BAD_SECRET};
use crate::gateway::Gateway;
use crate::policy::forward::verified_headers;
use crate::proxy::request_id::RequestId;
use crate::proxy::respond::problem_header;
use crate::state::RateInfo;

/// The response header Envoy's HTTP ext_authz reads as the list of request
/// headers to remove before forwarding (comma-separated names).
pub const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// Serves authorization checks from the gateway's shared state.
pub struct AuthzHttpApp {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl ServeHttp for AuthzHttpApp {
    /// Runs for each check once its header is read; the answer is the
    /// whole response (an allow has no body).
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let snapshot = self.gateway.snapshot();
        let req = session.req_header();
        let request = CheckRequest {
            method: &req.method,
            target: req.raw_path(),
            headers: &req.headers,
        };
        let documentation = snapshot.config.service.documentation_url.as_deref();
        let Some(settings) = snapshot.config.server.authz.as_ref() else {
            // `server.authz` was removed by a reload: refuse until restart.
            let id = RequestId::for_request(&req.headers);
            return render_denial(BAD_SECRET, None, &id, documentation);
        };
        let checked = check(&self.gateway, &snapshot, settings, Protocol::Http, &request).await;
        render(&checked, documentation)
    }
}

/// The HTTP answer to a decided check; a denial's body links
/// `service.documentation_url` as the proxy's does.
pub fn render(checked: &Checked, documentation_url: Option<&str>) -> Response<Vec<u8>> {
    let id = &checked.request_id;
    match &checked.answer {
        Answer::Deny { reason, allow } => {
            let mut response = render_denial(*reason, allow.as_deref(), id, documentation_url);
            // A rate limit's `RateLimit`, `RateLimit-Policy`, `Retry-After`.
            for (name, value) in checked.rate.iter().flat_map(RateInfo::headers) {
                if let Ok(value) = http::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Answer::Allow(authorized) => {
            let verified = verified_headers(authorized);
            let mut builder = allowed(id, &checked.strip);
            for (name, value) in verified.iter() {
                builder = builder.header(name.as_str(), value.clone());
            }
            builder.body(Vec::new()).unwrap_or_else(|_| internal(id))
        }
        Answer::ShadowAllow(_) => allowed(id, &checked.strip)
            .body(Vec::new())
            .unwrap_or_else(|_| internal(id)),
    }
}

/// A 200 without a body, naming the client headers to remove (Envoy).
fn allowed(id: &RequestId, strip: &[HeaderName]) -> http::response::Builder {
    let mut builder = Response::builder()
        .status(200)
        .header("content-length", "0")
        .header("cache-control", "no-store")
        .header("x-request-id", id.header());
    if !strip.is_empty() {
        let names: Vec<&str> = strip.iter().map(HeaderName::as_str).collect();
        builder = builder.header(ENVOY_HEADERS_TO_REMOVE, names.join(","));
    }
    builder
}

/// The proxy's refusal: the same header (`proxy::respond::problem_header`)
/// and problem body (`Reason::problem_body`).
fn render_denial(
    reason: crate::error::Reason,
    allow: Option<&str>,
    id: &RequestId,
    documentation_url: Option<&str>,
) -> Response<Vec<u8>> {
    let body = reason.problem_body(id.as_str(), documentation_url);
    match problem_header(reason, id, body.len(), allow) {
        Ok(header) => into_response(&header, body),
        Err(_) => internal(id),
    }
}

fn into_response(header: &ResponseHeader, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::from_parts(header.as_owned_parts(), body)
}

/// A response that could not be built: never an allow.
fn internal(id: &RequestId) -> Response<Vec<u8>> {
    let mut response = Response::new(Vec::new());
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert("x-request-id", id.header());
    response
}
