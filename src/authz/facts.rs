//! Reads the original request's facts (method, target, host, headers) from
//! an authorization check, by the calling proxy's convention (SPEC section
//! 13): Envoy HTTP ext_authz (the check request is the original request,
//! its path led by `path_prefix`), nginx `auth_request` (`X-Original-URI`,
//! `X-Original-Method`, the subrequest's `Host`) and Traefik ForwardAuth
//! (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`). Pure: no I/O. A check
//! whose convention's facts are missing, repeated or malformed is refused
//! (400 `invalid_request`): it cannot be told apart from a client.

use http::header::{HeaderName, HOST};
use http::{HeaderMap, HeaderValue, Method};

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
        Convention::Envoy => envoy(check, path_prefix)?,
        Convention::Nginx => nginx(&mut headers)?,
        Convention::Traefik => traefik(&mut headers)?,
    };
    Ok(Original {
        convention,
        method,
        target,
        headers,
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
}
