//! Writes a refusal to the client: status, `application/problem+json` body,
//! `WWW-Authenticate`, `Retry-After`, `Allow` and `X-Request-Id`, all from
//! the one mapping in `error.rs`.

use bytes::Bytes;
use pingora_core::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use crate::error::Reason;
use crate::proxy::request_id::RequestId;
use crate::proxy::RequestCtx;

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
    Ok(resp)
}

/// Answers the client with the problem response for `reason`. The body
/// links the reason's documentation when the request's config generation
/// sets `service.documentation_url`.
pub async fn problem(
    session: &mut Session,
    ctx: &RequestCtx,
    reason: Reason,
    allow: Option<&str>,
) -> Result<()> {
    let documentation = ctx
        .snapshot
        .as_ref()
        .and_then(|s| s.config.service.documentation_url.as_deref());
    let body = reason.problem_body(ctx.request_id.as_str(), documentation);
    let mut header = problem_header(reason, &ctx.request_id, body.len(), allow)?;
    // A rate limit's `RateLimit`, `RateLimit-Policy` and `Retry-After`.
    for (name, value) in ctx.rate.iter().flat_map(crate::state::RateInfo::headers) {
        header.insert_header(name, value)?;
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
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
}
