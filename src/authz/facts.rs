//! Reads the original request's facts (method, target, host, headers) from
//! an authorization check, by the calling proxy's convention (SPEC section
//! 13): Envoy HTTP ext_authz (the check request is the original request,
//! its path led by `path_prefix`), nginx `auth_request` (`X-Original-URI`,
//! `X-Original-Method`, the subrequest's `Host`) and Traefik ForwardAuth
//! (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`), and Envoy's gRPC
//! ext_authz (`CheckRequest.attributes.request.http`). Pure: no I/O. A check
//! whose convention's facts are missing, repeated or malformed is refused
//! (400 `invalid_request`): it cannot be told apart from a client.

use http::header::{HeaderName, HOST};
use http::{HeaderMap, HeaderValue, Method};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;

use crate::config::OriginalRequest;

/// The header a caller sends the shared secret in.
pub const SECRET_HEADER: &str = "x-consent-gateway-authz";

const X_ORIGINAL_URI: &str = "x-original-uri";
const X_ORIGINAL_METHOD: &str = "x-original-method";
const X_FORWARDED_METHOD: &str = "x-forwarded-method";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_URI: &str = "x-forwarded-uri";

/// The convention a check was read by (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    Envoy,
    Nginx,
    Traefik,
    /// Envoy / Istio ext_authz v3 gRPC (`attributes.request.http`).
    EnvoyGrpc,
}

/// The original request, owned, ready to lend as `policy::RequestFacts`.
#[derive(Debug, Clone)]
pub struct Original {
    pub convention: Convention,
    pub method: Method,
    /// Path and query as the client sent them, undecoded.
    pub target: Vec<u8>,
    /// The client's headers: `Host` is the original host; the convention's
    /// own headers and the shared secret are taken out.
    pub headers: HeaderMap,
    /// The body, when the caller sent it (gRPC `with_request_body`).
    pub body: OriginalBody,
}

/// What a check says of the original request's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginalBody {
    /// Not sent (every HTTP convention; gRPC without `with_request_body`):
    /// a route that binds the body is refused, never allowed unread.
    Unknown,
    /// Sent whole.
    Complete(Vec<u8>),
    /// Sent cut short (`x-envoy-auth-partial-body: true`, or fewer bytes
    /// than `Content-Length`): 413 on a route that binds it.
    Truncated,
}

/// Why a check's facts could not be read (answered 400 `invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFacts(pub &'static str);

/// The check request as received by the authorization listener.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    pub method: &'a Method,
    /// The check request's own target (path and query).
    pub target: &'a [u8],
    pub headers: &'a HeaderMap,
}

/// Reads the original request by `mode` (`auto`: nginx when `X-Original-URI`
/// came, Traefik when `X-Forwarded-Uri` came, both at once refused, else
/// Envoy). `path_prefix` is Envoy's `http_service.path_prefix`.
pub fn read_original(
    mode: OriginalRequest,
    path_prefix: Option<&str>,
    check: &CheckRequest<'_>,
) -> Result<Original, MissingFacts> {
    let convention = match mode {
        OriginalRequest::Envoy => Convention::Envoy,
        OriginalRequest::Nginx => Convention::Nginx,
        OriginalRequest::Traefik => Convention::Traefik,
        OriginalRequest::Auto => {
            let nginx = check.headers.contains_key(X_ORIGINAL_URI);
            let traefik = check.headers.contains_key(X_FORWARDED_URI);
            match (nginx, traefik) {
                (true, true) => {
                    return Err(MissingFacts(
                        "both X-Original-URI and X-Forwarded-Uri: which convention?",
                    ))
                }
                (true, false) => Convention::Nginx,
                (false, true) => Convention::Traefik,
                (false, false) => Convention::Envoy,
            }
        }
    };
    let mut headers = check.headers.clone();
    headers.remove(SECRET_HEADER);
    let (method, target) = match convention {
        Convention::Nginx => nginx(&mut headers)?,
        Convention::Traefik => traefik(&mut headers)?,
        // Envoy HTTP: `mode` never names the gRPC convention here.
        Convention::Envoy | Convention::EnvoyGrpc => envoy(check, path_prefix)?,
    };
    Ok(Original {
        convention,
        method,
        target,
        headers,
        body: OriginalBody::Unknown,
    })
}

/// Envoy HTTP ext_authz: the check keeps the original method and headers
/// (`Host` is the original `:authority`); its path is `path_prefix` + the
/// original path.
fn envoy(
    check: &CheckRequest<'_>,
    path_prefix: Option<&str>,
) -> Result<(Method, Vec<u8>), MissingFacts> {
    let target = check.target;
    let Some(prefix) = path_prefix else {
        return Ok((check.method.clone(), target.to_vec()));
    };
    let rest = target.strip_prefix(prefix.as_bytes()).ok_or(MissingFacts(
        "the check path does not begin with path_prefix",
    ))?;
    if !rest.starts_with(b"/") {
        // `/authzX` is not under `/authz`; and the original path is never empty.
        return Err(MissingFacts("nothing after path_prefix but `/`-led path"));
    }
    Ok((check.method.clone(), rest.to_vec()))
}

/// nginx `auth_request`: `X-Original-Method` and `X-Original-URI` (set by
/// `proxy_set_header` in the auth location), host from the subrequest's
/// own `Host` (`proxy_set_header Host $host`).
fn nginx(headers: &mut HeaderMap) -> Result<(Method, Vec<u8>), MissingFacts> {
    let method = take_one(headers, X_ORIGINAL_METHOD)?;
    let uri = take_one(headers, X_ORIGINAL_URI)?;
    let method = parse_method(&method)?;
    Ok((method, origin_form(&uri)?))
}

/// Traefik ForwardAuth: a GET whose `X-Forwarded-Method`, `-Proto`,
/// `-Host` and `-Uri` describe the original request; the check's own
/// `Host` is the authorization server's and is replaced by `-Host`.
fn traefik(headers: &mut HeaderMap) -> Result<(Method, Vec<u8>), MissingFacts> {
    let method = take_one(headers, X_FORWARDED_METHOD)?;
    let proto = take_one(headers, X_FORWARDED_PROTO)?;
    let host = take_one(headers, X_FORWARDED_HOST)?;
    let uri = take_one(headers, X_FORWARDED_URI)?;
    if !matches!(proto.as_bytes(), b"http" | b"https") {
        return Err(MissingFacts("X-Forwarded-Proto is neither http nor https"));
    }
    let method = parse_method(&method)?;
    headers.remove(HOST);
    headers.insert(HOST, host);
    Ok((method, origin_form(&uri)?))
}

/// Removes `name` and returns its one value; absent or repeated is refused.
fn take_one(headers: &mut HeaderMap, name: &'static str) -> Result<HeaderValue, MissingFacts> {
    let name = HeaderName::from_static(name);
    let mut values = headers.get_all(&name).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(MissingFacts(match headers.contains_key(&name) {
            true => "an original-request header given twice",
            false => "an original-request header is missing",
        }));
    };
    let value = value.clone();
    headers.remove(&name);
    Ok(value)
}

fn parse_method(value: &HeaderValue) -> Result<Method, MissingFacts> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_uppercase) {
        return Err(MissingFacts(
            "the original method is not an upper-case token",
        ));
    }
    Method::from_bytes(bytes).map_err(|_| MissingFacts("the original method is not a token"))
}

/// An original URI as the callers send it: origin form (`/path?query`).
fn origin_form(value: &HeaderValue) -> Result<Vec<u8>, MissingFacts> {
    let bytes = value.as_bytes();
    if !bytes.starts_with(b"/") {
        return Err(MissingFacts("the original URI is not `/`-led"));
    }
    Ok(bytes.to_vec())
}

/// Envoy marks a body it cut at `with_request_body.max_request_bytes`.
const PARTIAL_BODY: &str = "x-envoy-auth-partial-body";

/// Envoy / Istio ext_authz v3 gRPC (`AttributeContext.HttpRequest`): the
/// method, `path` (the request target, query included, undecoded), `host`
/// (`:authority`), the headers (`header_map` when Envoy sends raw headers,
/// else `headers`; pseudo-headers skipped) and the body when sent. Missing
/// or ambiguous facts are refused; a `host` that disagrees with a `host`
/// header leaves both, for check 0 to refuse (two `Host`).
pub fn from_envoy_grpc(http: Option<&HttpRequest>) -> Result<Original, MissingFacts> {
    let http = http.ok_or(MissingFacts("no attributes.request.http"))?;
    if http.method.is_empty() || !http.method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(MissingFacts(
            "the original method is not an upper-case token",
        ));
    }
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|_| MissingFacts("the original method is not a token"))?;
    if !http.path.starts_with('/') {
        return Err(MissingFacts("the original path is empty or not `/`-led"));
    }
    if !http.query.is_empty() || !http.fragment.is_empty() {
        // Envoy leaves both empty (the query is in `path`).
        return Err(MissingFacts("query or fragment given beside path"));
    }
    if !matches!(http.scheme.as_str(), "" | "http" | "https") {
        return Err(MissingFacts("the scheme is neither http nor https"));
    }
    let mut headers = grpc_headers(http)?;
    let host = match http.host.as_str() {
        "" => None,
        host => Some(HeaderValue::from_str(host).map_err(|_| MissingFacts("a malformed host"))?),
    };
    if let Some(host) = host {
        if !headers.get_all(HOST).iter().any(|h| *h == host) {
            headers.append(HOST, host);
        }
    }
    let partial = headers.remove(PARTIAL_BODY);
    let body = grpc_body(http, &headers, partial.as_ref());
    Ok(Original {
        convention: Convention::EnvoyGrpc,
        method,
        target: http.path.as_bytes().to_vec(),
        headers,
        body,
    })
}

/// The original headers of a gRPC check: `header_map` (raw values, one
/// entry per field line) when given, else the `headers` map.
fn grpc_headers(http: &HttpRequest) -> Result<HeaderMap, MissingFacts> {
    let raw = http.header_map.as_ref().map(|m| m.headers.as_slice());
    let pairs: Vec<(&str, &[u8])> = match raw {
        Some(raw) if !raw.is_empty() => raw
            .iter()
            .map(|h| match h.raw_value.is_empty() {
                true => (h.key.as_str(), h.value.as_bytes()),
                false => (h.key.as_str(), h.raw_value.as_slice()),
            })
            .collect(),
        _ => http
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect(),
    };
    let mut headers = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if name.starts_with(':') {
            continue; // `:authority` and `:path` are read from their fields
        }
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| MissingFacts("a header name is not a token"))?;
        let value =
            HeaderValue::from_bytes(value).map_err(|_| MissingFacts("a malformed header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The body as a gRPC check carries it: `raw_body` (`pack_as_bytes`) or
/// `body`; empty with `size` 0 is a known empty body; cut short (Envoy's
/// mark, or fewer bytes than `Content-Length`) is `Truncated`.
fn grpc_body(
    http: &HttpRequest,
    headers: &HeaderMap,
    partial: Option<&HeaderValue>,
) -> OriginalBody {
    let bytes: &[u8] = match (http.raw_body.is_empty(), http.body.is_empty()) {
        (false, _) => &http.raw_body,
        (true, false) => http.body.as_bytes(),
        (true, true) if http.size == 0 => &[],
        (true, true) => return OriginalBody::Unknown,
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cut = partial.is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"true"));
    if cut || declared.is_some_and(|n| n > bytes.len() as u64) {
        return OriginalBody::Truncated;
    }
    OriginalBody::Complete(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_static(v));
        }
        map
    }

    fn read(
        mode: OriginalRequest,
        prefix: Option<&str>,
        method: &Method,
        target: &str,
        h: &HeaderMap,
    ) -> Result<Original, MissingFacts> {
        let check = CheckRequest {
            method,
            target: target.as_bytes(),
            headers: h,
        };
        read_original(mode, prefix, &check)
    }

    #[test]
    fn nginx_reads_the_original_headers_and_keeps_the_host() {
        let h = headers(&[
            ("host", "api.example.no"),
            ("x-original-uri", "/income/1?x=1"),
            ("x-original-method", "POST"),
            ("x-consent-gateway-authz", "secret"),
        ]);
        let o = read(OriginalRequest::Auto, None, &Method::GET, "/auth", &h).unwrap();
        assert_eq!(o.convention, Convention::Nginx);
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.target, b"/income/1?x=1");
        assert_eq!(o.headers["host"], "api.example.no");
        assert!(o.headers.get("x-original-uri").is_none());
        assert!(o.headers.get(SECRET_HEADER).is_none());
    }

    #[test]
    fn traefik_takes_the_host_from_x_forwarded_host() {
        let h = headers(&[
            ("host", "gateway:9191"),
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.no"),
            ("x-forwarded-uri", "/income"),
        ]);
        let o = read(OriginalRequest::Auto, None, &Method::GET, "/", &h).unwrap();
        assert_eq!(o.convention, Convention::Traefik);
        assert_eq!(o.headers["host"], "api.example.no");
        assert_eq!(o.headers.get_all("host").iter().count(), 1);
        assert_eq!(o.target, b"/income");
    }

    #[test]
    fn envoy_removes_the_path_prefix() {
        let h = headers(&[("host", "api.example.no")]);
        let prefix = Some("/authz");
        let o = read(
            OriginalRequest::Auto,
            prefix,
            &Method::PUT,
            "/authz/a?b",
            &h,
        )
        .unwrap();
        assert_eq!(
            (o.convention, o.method, o.target),
            (Convention::Envoy, Method::PUT, b"/a?b".to_vec())
        );
        for bad in ["/a", "/authzX/a", "/authz", "/authz?x"] {
            assert!(
                read(OriginalRequest::Envoy, prefix, &Method::GET, bad, &h).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn missing_repeated_or_malformed_facts_are_refused() {
        let nginx_only_uri = headers(&[("x-original-uri", "/a")]);
        let twice = headers(&[
            ("x-original-uri", "/a"),
            ("x-original-uri", "/b"),
            ("x-original-method", "GET"),
        ]);
        let lower = headers(&[("x-original-uri", "/a"), ("x-original-method", "get")]);
        let absolute = headers(&[
            ("x-original-uri", "http://evil/a"),
            ("x-original-method", "GET"),
        ]);
        let both = headers(&[
            ("x-original-uri", "/a"),
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/b"),
        ]);
        let traefik_no_host = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-uri", "/income"),
        ]);
        for h in [
            nginx_only_uri,
            twice,
            lower,
            absolute,
            both,
            traefik_no_host,
        ] {
            assert!(
                read(OriginalRequest::Auto, None, &Method::GET, "/", &h).is_err(),
                "{h:?}"
            );
        }
        let none = HeaderMap::new();
        assert!(read(OriginalRequest::Nginx, None, &Method::GET, "/", &none).is_err());
        assert!(read(OriginalRequest::Traefik, None, &Method::GET, "/", &none).is_err());
    }

    fn grpc_http(method: &str, path: &str, pairs: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            host: "api.example.no".into(),
            scheme: "https".into(),
            protocol: "HTTP/1.1".into(),
            size: -1,
            headers: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..HttpRequest::default()
        }
    }

    #[test]
    fn envoy_grpc_reads_the_http_attributes() {
        let http = grpc_http(
            "POST",
            "/income/1?x=%2F",
            &[
                (":authority", "api.example.no"),
                (":path", "/x"),
                ("x-a", "1"),
            ],
        );
        let o = from_envoy_grpc(Some(&http)).unwrap();
        assert_eq!(o.convention, Convention::EnvoyGrpc);
        assert_eq!(o.method, Method::POST);
        assert_eq!(o.target, b"/income/1?x=%2F");
        assert_eq!(o.headers.get_all("host").iter().count(), 1);
        assert_eq!(o.headers["host"], "api.example.no");
        assert_eq!(o.headers["x-a"], "1");
        assert_eq!(
            o.headers.len(),
            2,
            "pseudo-headers skipped: {:?}",
            o.headers
        );
        assert_eq!(o.body, OriginalBody::Unknown);
    }

    #[test]
    fn envoy_grpc_raw_headers_keep_repeats_and_bytes() {
        use envoy_types::pb::envoy::config::core::v3 as core;
        let mut http = grpc_http("GET", "/a", &[("x-ignored", "1")]);
        let raw = |k: &str, v: &[u8]| core::HeaderValue {
            key: k.into(),
            raw_value: v.to_vec(),
            ..core::HeaderValue::default()
        };
        http.header_map = Some(core::HeaderMap {
            headers: vec![raw("x-b", b"1"), raw("x-b", b"2"), raw("x-c", b"\xe6")],
        });
        let o = from_envoy_grpc(Some(&http)).unwrap();
        assert!(o.headers.get("x-ignored").is_none());
        assert_eq!(o.headers.get_all("x-b").iter().count(), 2);
        assert_eq!(o.headers["x-c"].as_bytes(), b"\xe6");
        http.header_map = Some(core::HeaderMap {
            headers: vec![raw("x-d", b"a\r\nb")],
        });
        assert!(from_envoy_grpc(Some(&http)).is_err(), "CR LF in a value");
    }

    #[test]
    fn envoy_grpc_missing_or_ambiguous_facts_are_refused() {
        assert!(from_envoy_grpc(None).is_err());
        let bad = [
            grpc_http("GET", "", &[]),
            grpc_http("GET", "income", &[]),
            grpc_http("", "/a", &[]),
            grpc_http("get", "/a", &[]),
            grpc_http("GET", "/a", &[("bad name", "1")]),
            HttpRequest {
                query: "x=1".into(),
                ..grpc_http("GET", "/a", &[])
            },
            HttpRequest {
                scheme: "ftp".into(),
                ..grpc_http("GET", "/a", &[])
            },
        ];
        for http in bad {
            assert!(from_envoy_grpc(Some(&http)).is_err(), "{http:?}");
        }
        // A `host` header that disagrees stays beside the attribute: two
        // Host values, which check 0 refuses.
        let two = grpc_http("GET", "/a", &[("host", "evil.example")]);
        let o = from_envoy_grpc(Some(&two)).unwrap();
        assert_eq!(o.headers.get_all("host").iter().count(), 2);
        let same = grpc_http("GET", "/a", &[("host", "api.example.no")]);
        let o = from_envoy_grpc(Some(&same)).unwrap();
        assert_eq!(o.headers.get_all("host").iter().count(), 1);
    }

    #[test]
    fn envoy_grpc_body_is_complete_only_when_whole() {
        let with_body = |body: &str, pairs: &[(&str, &str)]| HttpRequest {
            body: body.into(),
            ..grpc_http("POST", "/a", pairs)
        };
        let o = from_envoy_grpc(Some(&with_body("{}", &[]))).unwrap();
        assert_eq!(o.body, OriginalBody::Complete(b"{}".to_vec()));
        let partial = with_body("{", &[("x-envoy-auth-partial-body", "true")]);
        let o = from_envoy_grpc(Some(&partial)).unwrap();
        assert_eq!(o.body, OriginalBody::Truncated);
        assert!(o.headers.get("x-envoy-auth-partial-body").is_none());
        let short = with_body("{", &[("content-length", "10")]);
        assert_eq!(
            from_envoy_grpc(Some(&short)).unwrap().body,
            OriginalBody::Truncated
        );
        let raw = HttpRequest {
            raw_body: vec![0xff, b'x'],
            ..grpc_http("POST", "/a", &[])
        };
        assert_eq!(
            from_envoy_grpc(Some(&raw)).unwrap().body,
            OriginalBody::Complete(vec![0xff, b'x'])
        );
        let empty = HttpRequest {
            size: 0,
            ..grpc_http("POST", "/a", &[])
        };
        assert_eq!(
            from_envoy_grpc(Some(&empty)).unwrap().body,
            OriginalBody::Complete(Vec::new())
        );
    }
}
