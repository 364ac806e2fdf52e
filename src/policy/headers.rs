//! Header hygiene (SPEC sections 5 and 12): which client-sent headers never
//! reach the upstream, on every route, before anything is set. Strip before
//! you set.

use http::{HeaderMap, HeaderValue};

use crate::header_names::REMOVED;
pub use crate::header_names::{is_always_removed, is_consent_namespace};

/// The names of the headers to remove from a client request before it is
/// forwarded: the consent namespace, hop-by-hop and method-override headers,
/// and every header named in `Connection`. `keep_upgrade` keeps `Upgrade` and
/// `Connection` on a genuine upgrade request (a WebSocket handshake).
pub fn headers_to_strip(headers: &HeaderMap, keep_upgrade: bool) -> Vec<http::HeaderName> {
    let mut out = Vec::new();
    let mut connection_named: Vec<String> = Vec::new();
    for value in headers.get_all(http::header::CONNECTION) {
        if let Ok(v) = value.to_str() {
            connection_named.extend(
                v.split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty()),
            );
        }
    }
    for name in headers.keys() {
        let n = name.as_str();
        let keep = keep_upgrade && (n == "upgrade" || n == "connection");
        let named_in_connection =
            connection_named.iter().any(|c| c == n) && !(keep_upgrade && n == "upgrade");
        if !keep && (REMOVED.contains(&n) || named_in_connection || is_consent_namespace(n)) {
            out.push(name.clone());
        }
    }
    out
}

/// Headers a `Connection` option may never name: the proxy sets them itself.
const UNNOMINABLE: &[&[u8]] = &[
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
];

/// Whether the `Connection` options can be honoured: at most 9, each an
/// HTTP token, none naming `Host` or an `X-Forwarded-*` header the gateway
/// sets. pingora refuses anything else only once the request is on its way
/// upstream, where the client would get no answer at all; check 0 refuses
/// it first (400).
pub fn connection_is_acceptable(headers: &HeaderMap) -> bool {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let mut options = crate::header_names::list_items(headers, http::header::CONNECTION);
    options.by_ref().take(9).all(|option| {
        option.iter().all(|b| is_tchar(*b))
            && !UNNOMINABLE.iter().any(|n| option.eq_ignore_ascii_case(n))
    }) && options.next().is_none()
}

/// A sane `X-Request-Id`: one value, 1-128 visible ASCII characters.
pub fn sane_request_id(headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut values = headers.get_all("x-request-id").iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let bytes = first.as_bytes();
    (!bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| (0x21..=0x7e).contains(b)))
        .then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn consent_namespace_aliases_are_caught() {
        for n in [
            "x-consent-id",
            "X-CONSENT-ID",
            "X_Consent_Id",
            "x.consent.id",
            "x-consent-",
            "x~consent~metadata-inntektsaar",
            "X_CONSENT_SUBJECT",
        ] {
            assert!(is_consent_namespace(n), "{n}");
        }
        for n in [
            "x-consentid",
            "x-consen-id",
            "consent-id",
            "x-request-id",
            "xconsent-id",
        ] {
            assert!(!is_consent_namespace(n), "{n}");
        }
    }

    #[test]
    fn strips_hop_by_hop_overrides_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-http-method-override", HeaderValue::from_static("DELETE"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h.insert("x_consent_id", HeaderValue::from_static("spoof"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        let mut stripped: Vec<String> = headers_to_strip(&h, false)
            .iter()
            .map(|n| n.as_str().to_string())
            .collect();
        stripped.sort();
        assert_eq!(
            stripped,
            vec![
                "connection",
                "keep-alive",
                "proxy-authorization",
                "te",
                "upgrade",
                "x-http-method-override",
                "x-real-ip",
                "x-secret",
                "x_consent_id"
            ]
        );
    }

    #[test]
    fn path_override_headers_are_stripped() {
        // IIS URL Rewrite, older Symfony and Zend route on these instead of
        // the request line: a request for a public path could reach the
        // handler of a consent route.
        let mut h = HeaderMap::new();
        h.insert("x-original-url", HeaderValue::from_static("/income/1"));
        h.insert("x-rewrite-url", HeaderValue::from_static("/income/1"));
        h.insert("x-original-uri", HeaderValue::from_static("/income/1"));
        let mut stripped: Vec<String> = headers_to_strip(&h, false)
            .iter()
            .map(|n| n.as_str().to_string())
            .collect();
        stripped.sort();
        assert_eq!(
            stripped,
            vec!["x-original-uri", "x-original-url", "x-rewrite-url"]
        );
    }

    #[test]
    fn genuine_upgrade_keeps_upgrade_and_connection() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-consent-id", HeaderValue::from_static("spoof"));
        let stripped = headers_to_strip(&h, true);
        assert_eq!(
            stripped,
            vec![http::HeaderName::from_static("x-consent-id")]
        );
    }

    #[test]
    fn connection_options_the_proxy_cannot_honour() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("connection", HeaderValue::from_static(value));
            connection_is_acceptable(&h)
        };
        assert!(connection_is_acceptable(&HeaderMap::new()));
        assert!(with("close"));
        assert!(with("keep-alive, X-Secret, Upgrade"));
        assert!(with("a, b, c, d, e, f, g, h, i"));
        for bad in [
            "close, Host",
            "x-forwarded-for",
            "X-Forwarded-Host",
            "x-forwarded-proto",
            "\"x-secret\"",
            ":authority",
            "a b",
            "a, b, c, d, e, f, g, h, i, j",
        ] {
            assert!(!with(bad), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.append("connection", HeaderValue::from_static("a, b, c, d, e"));
        h.append("connection", HeaderValue::from_static("f, g, h, i, j"));
        assert!(
            !connection_is_acceptable(&h),
            "options of every header count"
        );
    }

    #[test]
    fn request_id_sanity() {
        let mut h = HeaderMap::new();
        assert_eq!(sane_request_id(&h), None);
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(
            sane_request_id(&h).map(|v| v.as_bytes()),
            Some(&b"abc-123"[..])
        );
        h.append("x-request-id", HeaderValue::from_static("again"));
        assert_eq!(sane_request_id(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(sane_request_id(&h), None);
        h.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(sane_request_id(&h), None);
    }
}
