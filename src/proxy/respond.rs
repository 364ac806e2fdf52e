//! Writes a refusal to the client, all from the one mapping in `error.rs`:
//! status, `application/problem+json` body, `WWW-Authenticate`,
//! `Retry-After`, `Allow` and `X-Request-Id`; on a `grpc: true` route the
//! same refusal as a gRPC status in a trailers-only response (SPEC 13).

use bytes::Bytes;
use pingora_core::protocols::http::HttpTask;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::error::Reason;
use crate::proxy::request_id::RequestId;
use crate::proxy::RequestCtx;

/// The headers every refusal carries, whatever its rendering.
fn refusal_headers(
    resp: &mut ResponseHeader,
    reason: Reason,
    request_id: &RequestId,
    allow: Option<&str>,
) -> Result<()> {
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("x-request-id", request_id.header())?;
    if let Some(challenge) = reason.www_authenticate() {
        resp.insert_header("www-authenticate", challenge)?;
    }
    if let Some(seconds) = reason.retry_after() {
        resp.insert_header("retry-after", seconds.to_string())?;
    }
    if let Some(allow) = allow {
        resp.insert_header("allow", allow)?;
    }
    Ok(())
}

/// Builds the response header of a refusal (pure; tested below).
pub fn problem_header(
    reason: Reason,
    request_id: &RequestId,
    body_len: usize,
    allow: Option<&str>,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(reason.status(), Some(8))?;
    resp.insert_header("content-type", "application/problem+json")?;
    resp.insert_header("content-length", body_len.to_string())?;
    refusal_headers(&mut resp, reason, request_id, allow)?;
    Ok(resp)
}

/// Builds the trailers-only gRPC answer of a refusal (pure; tested below):
/// HTTP 200, `application/grpc`, `grpc-status` and `grpc-message` = the
/// reason code, in the one header block that ends the stream. Over HTTP/1
/// (`h2: false`) it says `content-length: 0` so the framing is explicit.
pub fn grpc_header(
    reason: Reason,
    request_id: &RequestId,
    allow: Option<&str>,
    h2: bool,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(200, Some(8))?;
    resp.insert_header("content-type", "application/grpc")?;
    resp.insert_header("grpc-status", reason.grpc_status().to_string())?;
    resp.insert_header("grpc-message", reason.code())?;
    if !h2 {
        resp.insert_header("content-length", "0")?;
    }
    refusal_headers(&mut resp, reason, request_id, allow)?;
    Ok(resp)
}

/// Whether the request's route answers refusals as gRPC statuses.
fn is_grpc_route(ctx: &RequestCtx) -> bool {
    match (&ctx.snapshot, ctx.route) {
        (Some(snapshot), Some(route)) => snapshot.config.routes[route].grpc,
        _ => false,
    }
}

/// Answers the client with the refusal for `reason`: problem+json, or a
/// trailers-only gRPC status on a `grpc: true` route. The problem body
/// links the reason's documentation when the request's config generation
/// sets `service.documentation_url`.
pub async fn problem(
    session: &mut Session,
    ctx: &RequestCtx,
    reason: Reason,
    allow: Option<&str>,
) -> Result<()> {
    if is_grpc_route(ctx) {
        let h2 = session.req_header().version == http::Version::HTTP_2;
        let mut header = grpc_header(reason, &ctx.request_id, allow, h2)?;
        rate_headers(&mut header, ctx)?;
        // `Session::write_response_header` never ends an h2 stream with its
        // header block (pingora-core `ServerSession`); a task does.
        let task = HttpTask::Header(Box::new(header), true);
        session
            .downstream_session
            .response_duplex_vec(vec![task])
            .await?;
        return Ok(());
    }
    let documentation = ctx
        .snapshot
        .as_ref()
        .and_then(|s| s.config.service.documentation_url.as_deref());
    let body = reason.problem_body(ctx.request_id.as_str(), documentation);
    let mut header = problem_header(reason, &ctx.request_id, body.len(), allow)?;
    rate_headers(&mut header, ctx)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

/// A rate limit's `RateLimit`, `RateLimit-Policy` and `Retry-After`.
fn rate_headers(header: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    for (name, value) in ctx.rate.iter().flat_map(crate::state::RateInfo::headers) {
        header.insert_header(name, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_challenge_retry_and_allow() {
        let r1 = &RequestId::from_static("r1");
        let h = problem_header(Reason::KeysUnavailable, r1, 10, None).unwrap();
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(h.headers["retry-after"], "5");
        assert!(h.headers.get("www-authenticate").is_none());
        let h = problem_header(Reason::MethodNotAllowed, r1, 10, Some("GET, POST")).unwrap();
        assert_eq!(h.headers["allow"], "GET, POST");
        let h = problem_header(Reason::BadSignature, r1, 10, None).unwrap();
        assert_eq!(
            h.headers["www-authenticate"],
            r#"Bearer realm="consent-gateway", error="invalid_token""#
        );
        assert_eq!(h.headers["content-type"], "application/problem+json");
        assert_eq!(h.headers["x-request-id"], "r1");
    }

    #[test]
    fn grpc_refusal_is_trailers_only_with_the_status() {
        let r1 = &RequestId::from_static("r1");
        let h = grpc_header(Reason::ConsentExpired, r1, None, true).unwrap();
        assert_eq!(h.status.as_u16(), 200);
        assert_eq!(h.headers["content-type"], "application/grpc");
        assert_eq!(h.headers["grpc-status"], "7");
        assert_eq!(h.headers["grpc-message"], "consent_expired");
        assert_eq!(h.headers["x-request-id"], "r1");
        assert!(h.headers.get("content-length").is_none());
        let h = grpc_header(Reason::MissingToken, r1, None, false).unwrap();
        assert_eq!(h.headers["grpc-status"], "16");
        assert_eq!(h.headers["content-length"], "0");
    }
}
