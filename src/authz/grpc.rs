//! The gRPC authorization listener (`server.authz.grpc_listen`): Envoy and
//! Istio ext_authz v3 (`envoy.service.auth.v3.Authorization/Check`, the
//! generated service of the `envoy-types` crate). A check reads the original
//! request from `attributes.request.http` (`facts::from_envoy_grpc`), is
//! decided by the one `check_original` every door calls, and is answered:
//! allow, `OkHttpResponse` (the section 5 headers to set, the client's
//! copies to remove); deny, `DeniedHttpResponse` (the proxy's status,
//! problem+json body and headers) with `CheckResponse.status` from
//! `Reason::grpc_status`. The shared secret travels as gRPC metadata (Envoy
//! `grpc_service.initial_metadata`), never in the original request.
//!
//! Serving: a pingora listening service (`AuthzGrpcApp`), so the socket is
//! bound, inherited on `--upgrade` and closed at shutdown like every other
//! listener; each accepted connection is served as HTTP/2 (cleartext, prior
//! knowledge, as Envoy's `envoy_grpc` clusters speak) by hyper, and closed
//! gracefully (GOAWAY, in-flight checks answered) when the shutdown watch
//! fires on SIGTERM.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue as PbHeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use http::{HeaderMap, HeaderValue};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;

use super::facts::from_envoy_grpc;
use super::BAD_SECRET;
use super::{check_original, missing_facts, secret_ok, Answer, Caller, Checked, Protocol};
use crate::error::Reason;
use crate::gateway::Gateway;
use crate::policy::forward::verified_headers;
use crate::proxy::request_id::RequestId;
use crate::proxy::respond::problem_header;
use crate::state::RateInfo;

/// `google.rpc.Code::OK`.
const OK: i32 = 0;

/// The ext_authz v3 `Authorization` service over the gateway's shared state.
pub struct AuthzGrpc {
    pub gateway: Arc<Gateway>,
}

#[async_trait]
impl Authorization for AuthzGrpc {
    /// One check. Every answer is a `CheckResponse` (an RPC error only for
    /// a call tonic cannot decode, which Envoy also treats as a denial).
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let metadata = request.metadata().clone().into_headers();
        let check = request.into_inner();
        let snapshot = self.gateway.snapshot();
        let documentation = snapshot.config.service.documentation_url.as_deref();
        let http = check
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let caller_headers = caller_headers(http);
        let caller = Caller {
            protocol: Protocol::Grpc,
            method: http.map_or("-", |h| h.method.as_str()),
            headers: &caller_headers,
        };
        let Some(settings) = snapshot.config.server.authz.as_ref() else {
            // `server.authz` was removed by a reload: refuse until restart.
            let id = RequestId::for_request(&caller_headers);
            return Ok(tonic::Response::new(denial(
                BAD_SECRET, None, &id, None, None,
            )));
        };
        let original = if secret_ok(settings.shared_secret.as_deref(), &metadata) {
            from_envoy_grpc(http).map_err(missing_facts)
        } else {
            Err(BAD_SECRET)
        };
        let checked = check_original(&self.gateway, &snapshot, &caller, original).await;
        Ok(tonic::Response::new(render(&checked, documentation)))
    }
}

/// The original request's `X-Request-Id` (Envoy's `http.id`, else the
/// header) and trace context, for the check's id and audit line.
fn caller_headers(http: Option<&HttpRequest>) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(http) = http else {
        return out;
    };
    let header = |name: &str| {
        let raw = http.header_map.as_ref().map(|m| m.headers.as_slice());
        http.headers.get(name).map(String::as_bytes).or_else(|| {
            raw.unwrap_or_default()
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case(name))
                .map(|h| match h.raw_value.is_empty() {
                    true => h.value.as_bytes(),
                    false => h.raw_value.as_slice(),
                })
        })
    };
    let id = (!http.id.is_empty()).then_some(http.id.as_bytes());
    let fields = [
        ("x-request-id", id.or_else(|| header("x-request-id"))),
        ("traceparent", header("traceparent")),
        ("tracestate", header("tracestate")),
    ];
    for (name, value) in fields {
        if let Some(value) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            out.insert(name, value);
        }
    }
    out
}

/// The gRPC answer to a decided check.
pub fn render(checked: &Checked, documentation_url: Option<&str>) -> CheckResponse {
    let id = &checked.request_id;
    let rate = checked.rate.as_ref();
    let ok = |headers: Vec<HeaderValueOption>| {
        let response = OkHttpResponse {
            headers,
            headers_to_remove: checked.strip.iter().map(|n| n.to_string()).collect(),
            response_headers_to_add: rate.map(rate_headers).unwrap_or_default(),
            ..OkHttpResponse::default()
        };
        CheckResponse {
            status: Some(rpc::Status {
                code: OK,
                ..rpc::Status::default()
            }),
            http_response: Some(HttpResponse::OkResponse(response)),
            ..CheckResponse::default()
        }
    };
    match &checked.answer {
        Answer::Allow(authorized) => ok(verified_headers(authorized)
            .iter()
            .map(|(name, value)| header_option(name.as_str(), value))
            .collect()),
        Answer::ShadowAllow(_) => ok(Vec::new()),
        Answer::Deny { reason, allow } => {
            denial(*reason, allow.as_deref(), id, rate, documentation_url)
        }
    }
}

/// A refusal as the proxy answers it: its status, problem+json body and
/// headers (`WWW-Authenticate`, `Retry-After`, `Allow`, `RateLimit`), in a
/// `DeniedHttpResponse`; `status` the reason's gRPC code, message its code.
fn denial(
    reason: Reason,
    allow: Option<&str>,
    id: &RequestId,
    rate: Option<&RateInfo>,
    documentation_url: Option<&str>,
) -> CheckResponse {
    let body = reason.problem_body(id.as_str(), documentation_url);
    let mut headers: Vec<HeaderValueOption> = match problem_header(reason, id, body.len(), allow) {
        Ok(header) => header
            .headers
            .iter()
            // Envoy frames the local reply itself.
            .filter(|(name, _)| *name != http::header::CONTENT_LENGTH)
            .map(|(name, value)| header_option(name.as_str(), value))
            .collect(),
        Err(_) => Vec::new(),
    };
    if let Some(rate) = rate {
        let names: Vec<String> = rate.headers().iter().map(|(n, _)| n.to_string()).collect();
        headers.retain(|h| !h.header.as_ref().is_some_and(|h| names.contains(&h.key)));
        headers.extend(rate_headers(rate));
    }
    CheckResponse {
        status: Some(rpc::Status {
            code: i32::from(reason.grpc_status()),
            message: reason.code().to_string(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(reason.status()),
            }),
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })),
        ..CheckResponse::default()
    }
}

/// `RateLimit`, `RateLimit-Policy` (and `Retry-After` when refused).
fn rate_headers(rate: &RateInfo) -> Vec<HeaderValueOption> {
    rate.headers()
        .into_iter()
        .filter_map(|(name, value)| {
            let value = HeaderValue::from_str(&value).ok()?;
            Some(header_option(name, &value))
        })
        .collect()
}

/// One header to set, overwriting any copy (`OVERWRITE_IF_EXISTS_OR_ADD`);
/// a value that is not UTF-8 goes as `raw_value`.
fn header_option(name: &str, value: &HeaderValue) -> HeaderValueOption {
    let (value, raw_value) = match value.to_str() {
        Ok(text) => (text.to_string(), Vec::new()),
        Err(_) => (String::new(), value.as_bytes().to_vec()),
    };
    HeaderValueOption {
        header: Some(PbHeaderValue {
            key: name.to_string(),
            value,
            raw_value,
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// The pingora app of the gRPC listener: each connection served as HTTP/2.
pub struct AuthzGrpcApp {
    service: AuthorizationServer<AuthzGrpc>,
    open: OpenGrpcConnections,
    /// `server.limits.max_connections`: a connection beyond it is closed
    /// at once (its caller retries elsewhere or denies).
    max_connections: usize,
}

impl AuthzGrpcApp {
    pub fn new(gateway: Arc<Gateway>, max_connections: usize) -> Self {
        Self {
            service: AuthorizationServer::new(AuthzGrpc { gateway }),
            open: OpenGrpcConnections::default(),
            max_connections: max_connections.max(1),
        }
    }

    /// Its open connections, for a prompt shutdown that still answers
    /// every in-flight check (`server::exit_when_drained`).
    pub fn open_connections(&self) -> OpenGrpcConnections {
        self.open.clone()
    }
}

/// How many gRPC connections are open.
#[derive(Debug, Clone, Default)]
pub struct OpenGrpcConnections(Arc<AtomicUsize>);

impl OpenGrpcConnections {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> OpenGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        OpenGuard(Arc::clone(&self.0))
    }
}

/// One open connection; counted down when dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl ServerApp for AuthzGrpcApp {
    /// Runs once per accepted connection, for its whole life: HTTP/2 until
    /// the caller closes it, or until shutdown, when in-flight checks are
    /// answered and the connection is closed with GOAWAY. Never reused.
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.open.enter();
        if self.open.count() > self.max_connections {
            log::warn!(
                "authz gRPC: more than {} connections, closing one",
                self.max_connections
            );
            return None;
        }
        let service = hyper_util::service::TowerToHyperService::new(self.service.clone());
        let mut builder =
            hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder.timer(hyper_util::rt::TokioTimer::new());
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(session), service);
        tokio::pin!(connection);
        let mut shutdown = shutdown.clone();
        let stop = async move {
            // A closed watch (the server is gone) also means stop.
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stop => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            log::debug!("authz gRPC connection: {e}");
        }
        None
    }
}
