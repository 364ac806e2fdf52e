//! The admin listener (SPEC section 8): `/metrics`, `/healthz`, `/readyz`,
//! `/status`. Read-only; bind it to loopback or a private interface.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use crate::gateway::Gateway;

/// Serves the admin endpoints from the gateway's shared state.
pub struct AdminApp {
    pub gateway: Arc<Gateway>,
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

impl AdminApp {
    /// `/readyz`: issuers with keys, and a store that answers when a route
    /// needs it (SPEC section 13).
    fn readyz(&self) -> Response<Vec<u8>> {
        let (state, state_blocks) = self.gateway.state_readiness();
        let body = match self.gateway.readiness() {
            Ok(()) if !state_blocks => {
                return reply(200, "application/json", br#"{"ready":true}"#.to_vec())
            }
            Ok(()) => serde_json::json!({
                "ready": false,
                "reason": "state store unreachable",
                "state": crate::gateway::state_json(&state),
            }),
            Err(missing) => serde_json::json!({
                "ready": false,
                "reason": "issuers without keys",
                "issuers_without_keys": missing,
                "state": crate::gateway::state_json(&state),
            }),
        };
        reply(503, "application/json", body.to_string().into_bytes())
    }

    /// Answers one admin request by path (pure apart from reading state).
    pub fn answer(&self, method: &http::Method, path: &str) -> Response<Vec<u8>> {
        if method != http::Method::GET && method != http::Method::HEAD {
            return reply(405, "text/plain", b"method not allowed\n".to_vec());
        }
        match path {
            "/metrics" => reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.gateway.metrics.render(),
            ),
            "/healthz" => reply(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => self.readyz(),
            "/status" => reply(
                200,
                "application/json",
                self.gateway.status_json().to_string().into_bytes(),
            ),
            _ => reply(404, "text/plain", b"not found\n".to_vec()),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    /// Runs for each admin request once its header is read.
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let method = req.method.clone();
        self.answer(&method, &path)
    }
}
