//! The HTTP/1 header block as the connection guard reads it (pure): the
//! refusals pingora's own parser would answer with a bare `400` (duplicate
//! `Host`, bad framing, an unknown version, an HTTP/2 preface), the exact
//! header-size limit, and the framing of the body that follows, so the guard
//! finds the next pipelined request.

use http::HeaderMap;

use crate::error::Reason;

/// As many header fields as pingora parses (`MAX_HEADERS` in pingora-core's
/// `protocols/http/v1/common.rs`); more is refused with 431.
pub const MAX_HEADERS: usize = 256;

/// What follows a header block the guard accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next byte starts the next request.
    None,
    /// A body of exactly this many bytes.
    Length(u64),
    /// A chunked body: the guard stops following the framing (pingora's own
    /// parser still reads what comes).
    Untracked,
    /// An upgrade or CONNECT: what follows may be another protocol.
    Tunnel,
}

/// A header block the guard refuses: why, and the request id to answer with.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Reason,
    /// The client's own `X-Request-Id` when it is a single sane value.
    pub request_id: Option<http::HeaderValue>,
    /// The request method, when the request line could be read.
    pub method: Option<String>,
}

impl Refusal {
    fn new(reason: Reason) -> Self {
        Self {
            reason,
            request_id: None,
            method: None,
        }
    }
}

/// Checks one complete header block (request line through the empty line).
pub fn check_block(block: &[u8], limit: usize) -> Result<Framing, Refusal> {
    if block.len() > limit {
        return Err(Refusal::new(Reason::HeadersTooLarge));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(block) {
        Ok(httparse::Status::Complete(_)) => check_parsed(&req),
        Ok(httparse::Status::Partial) => Err(Refusal::new(Reason::InvalidRequest)),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::new(Reason::HeadersTooLarge)),
        Err(httparse::Error::Token | httparse::Error::Version) => {
            // pingora percent-encodes an illegal request target and parses
            // again; do the same, and refuse only what it would refuse.
            match escape_request_line(block) {
                Some(escaped) if escaped != block => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut req = httparse::Request::new(&mut headers);
                    match req.parse(&escaped) {
                        Ok(httparse::Status::Complete(_)) => check_parsed(&req),
                        _ => Err(refusal_for_unparsed(block)),
                    }
                }
                _ => Err(refusal_for_unparsed(block)),
            }
        }
        Err(_) => Err(refusal_for_unparsed(block)),
    }
}

/// A block httparse cannot read: 400, with what can still be read of it.
fn refusal_for_unparsed(block: &[u8]) -> Refusal {
    let mut refusal = Refusal::new(Reason::InvalidRequest);
    let line_end = memchr::memchr(b'\n', block).unwrap_or(block.len());
    let method = block[..line_end]
        .split(|&b| b == b' ')
        .next()
        .unwrap_or(b"");
    if !method.is_empty() && method.iter().all(|b| b.is_ascii_alphabetic()) {
        refusal.method = Some(String::from_utf8_lossy(method).into_owned());
    }
    refusal.request_id = request_id_in(block);
    refusal
}

/// A single sane `X-Request-Id` in a block that may not parse as a whole.
fn request_id_in(block: &[u8]) -> Option<http::HeaderValue> {
    let mut map = HeaderMap::new();
    for line in block.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"x-request-id") {
            let value = line[colon + 1..].trim_ascii();
            if let Ok(v) = http::HeaderValue::from_bytes(value) {
                map.append("x-request-id", v);
            }
        }
    }
    crate::policy::headers::sane_request_id(&map).cloned()
}

/// pingora's `escape_illegal_request_line`: the target of a request line
/// `METHOD SP target SP HTTP/x.y` with spaces, `"`, `<`, `>` or control
/// characters in it is percent-encoded.
fn escape_request_line(block: &[u8]) -> Option<Vec<u8>> {
    let line_end = memchr::memchr(b'\n', block)?;
    let line = block[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&block[..line_end]);
    let first = memchr::memchr(b' ', line)?;
    let last = memchr::memrchr(b' ', line)?;
    if last <= first {
        return None;
    }
    let target = &line[first + 1..last];
    let mut out = Vec::with_capacity(block.len() + 16);
    out.extend_from_slice(&line[..=first]);
    for &b in target {
        if b <= 0x20 || b == 0x7f || b == b'"' || b == b'<' || b == b'>' {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&block[first + 1 + target.len()..]);
    Some(out)
}

/// The checks pingora's `read_request` and `validate_request` make on a
/// parsed header, and what it then makes of the body.
fn check_parsed(req: &httparse::Request<'_, '_>) -> Result<Framing, Refusal> {
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-request-id") {
            if let Ok(v) = http::HeaderValue::from_bytes(h.value) {
                map.append("x-request-id", v);
            }
        }
    }
    let refuse = |reason| Refusal {
        reason,
        request_id: crate::policy::headers::sane_request_id(&map).cloned(),
        method: req.method.map(str::to_string),
    };
    let named = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    // One `Host` (RFC 9112 section 3.2), no userinfo, and an absolute-form
    // target's authority equal to it.
    let hosts: Vec<&[u8]> = named("host").collect();
    if hosts.len() > 1 || hosts.iter().any(|h| h.contains(&b'@')) {
        return Err(refuse(Reason::InvalidRequest));
    }
    let method = req.method.unwrap_or("");
    let path = req.path.unwrap_or("").as_bytes();
    if method != "CONNECT" {
        if let Some(authority) = absolute_form_authority(path) {
            if authority.contains(&b'@') || hosts.first().is_some_and(|h| *h != authority) {
                return Err(refuse(Reason::InvalidRequest));
            }
        }
    }
    let te: Vec<&[u8]> = named("transfer-encoding").collect();
    let cl: Vec<&[u8]> = named("content-length").collect();
    if !te.is_empty() {
        // HTTP/1.0 with Transfer-Encoding is faulty framing (RFC 9112
        // section 6.1); chunked must be the final coding; and both
        // Transfer-Encoding and Content-Length is the classic smuggling
        // shape, refused rather than reconciled.
        let last = te
            .last()
            .and_then(|v| v.split(|&b| b == b',').next_back())
            .map(<[u8]>::trim_ascii)
            .unwrap_or(b"");
        if req.version == Some(0) || !last.eq_ignore_ascii_case(b"chunked") || !cl.is_empty() {
            return Err(refuse(Reason::InvalidRequest));
        }
        return Ok(Framing::Untracked);
    }
    let mut length: Option<u64> = None;
    for value in &cl {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            let n = std::str::from_utf8(token)
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok());
            match (n, length) {
                (None, _) => return Err(refuse(Reason::InvalidRequest)),
                (Some(n), Some(prev)) if n != prev => return Err(refuse(Reason::InvalidRequest)),
                (Some(n), _) => length = Some(n),
            }
        }
    }
    let upgrade = named("upgrade").next().is_some();
    Ok(match length {
        _ if upgrade || method == "CONNECT" => Framing::Tunnel,
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// The authority of an absolute-form `http://` or `https://` target.
fn absolute_form_authority(path: &[u8]) -> Option<&[u8]> {
    let lower: Vec<u8> = path.iter().take(8).map(u8::to_ascii_lowercase).collect();
    let rest = if lower.starts_with(b"http://") {
        &path[7..]
    } else if lower.starts_with(b"https://") {
        &path[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Where a header block ends: the index just past its empty line (`\n\n` or
/// `\n\r\n`, as httparse reads it), searching from `from`.
pub fn block_end(bytes: &[u8], from: usize) -> Option<usize> {
    memchr::memchr_iter(b'\n', &bytes[from.min(bytes.len())..])
        .map(|at| at + from)
        .find_map(|at| match bytes.get(at + 1) {
            Some(b'\n') => Some(at + 2),
            Some(b'\r') if bytes.get(at + 2) == Some(&b'\n') => Some(at + 3),
            _ => None,
        })
}

/// The bytes of a refusal written by the guard itself: a complete
/// problem+json response that says `Connection: close` (with the reason's
/// `documentation` link when `service.documentation_url` is set).
pub fn refusal_response(
    reason: Reason,
    request_id: &str,
    documentation_url: Option<&str>,
) -> Vec<u8> {
    let body = reason.problem_body(request_id, documentation_url);
    let status = reason.status();
    let phrase = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-request-id: {request_id}\r\n",
        body.len()
    );
    if let Some(challenge) = reason.www_authenticate() {
        out.push_str(&format!("www-authenticate: {challenge}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(block: &str) -> Result<Framing, Reason> {
        check_block(block.as_bytes(), 8192).map_err(|r| r.reason)
    }

    #[test]
    fn ordinary_blocks_pass_with_their_framing() {
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Framing::Untracked)
        );
        assert_eq!(
            check("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"),
            Ok(Framing::Tunnel)
        );
        // pingora escapes a space in the target and serves it.
        assert_eq!(
            check("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Framing::None)
        );
        assert_eq!(
            check("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Framing::None)
        );
    }

    #[test]
    fn what_pingora_would_refuse_bare_is_refused_here() {
        let bad = [
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ];
        for block in bad {
            assert_eq!(check(block), Err(Reason::InvalidRequest), "{block:?}");
        }
    }

    #[test]
    fn the_size_limit_is_exact_and_counts_the_whole_block() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ";
        let fill = |total: usize| {
            let pad = "p".repeat(total - head.len() - 4);
            format!("{head}{pad}\r\n\r\n")
        };
        assert_eq!(fill(8192).len(), 8192);
        assert!(check_block(fill(8192).as_bytes(), 8192).is_ok());
        for over in [8193, 8194] {
            let r = check_block(fill(over).as_bytes(), 8192).map_err(|r| r.reason);
            assert_eq!(r, Err(Reason::HeadersTooLarge), "{over} bytes");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let block = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(
            check_block(block.as_bytes(), 1 << 20).map_err(|r| r.reason),
            Err(Reason::HeadersTooLarge)
        );
    }

    #[test]
    fn a_refusal_keeps_a_sane_request_id() {
        let r = check_block(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nX-Request-Id: abc-1\r\n\r\n",
            8192,
        )
        .unwrap_err();
        assert_eq!(r.request_id.unwrap(), "abc-1");
        assert_eq!(r.method.as_deref(), Some("GET"));
        let r = check_block(b"GET / HTTP/3\r\nX-Request-Id: abc-2\r\n\r\n", 8192).unwrap_err();
        assert_eq!(r.request_id.unwrap(), "abc-2");
    }

    #[test]
    fn block_end_finds_every_line_end_style() {
        assert_eq!(block_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(block_end(b"GET / HTTP/1.1\n\nrest", 0), Some(16));
        assert_eq!(block_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
    }

    #[test]
    fn the_guard_answer_is_a_complete_closing_problem_response() {
        let bytes = refusal_response(Reason::InvalidRequest, "r-1", None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
        assert!(text.contains("\r\nconnection: close\r\n"));
        assert!(text.contains("\r\nx-request-id: r-1\r\n"));
        let body = Reason::InvalidRequest.problem_body("r-1", None);
        assert!(text.ends_with(std::str::from_utf8(&body).unwrap()));
    }
}
