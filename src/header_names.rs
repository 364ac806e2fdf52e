//! The request header names that never reach the upstream (SPEC sections 5
//! and 12): one list, read by config validation (a route may not bind what
//! is stripped) and by the policy's header hygiene.

/// Hop-by-hop, proxy, method- and path-override headers removed from every
/// client request.
pub(crate) const REMOVED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "x-real-ip",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // Path overrides some frameworks route on instead of the request line.
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
];

/// Whether a (lowercase) header name is removed from every client request
/// regardless of its value (the consent namespace aside).
pub fn is_always_removed(name: &str) -> bool {
    REMOVED.contains(&name)
}

/// Whether a header name is in the `x-consent-` namespace once lowercased
/// and every character other than a-z and 0-9 is read as `-`: so
/// `X_Consent_Id`, `x.consent.id` and `X-CONSENT-ID` are all caught.
pub fn is_consent_namespace(name: &str) -> bool {
    const PREFIX: &[u8] = b"x-consent-";
    let bytes = name.as_bytes();
    bytes.len() >= PREFIX.len()
        && bytes[..PREFIX.len()].iter().zip(PREFIX).all(|(b, p)| {
            let folded = match b.to_ascii_lowercase() {
                c @ (b'a'..=b'z' | b'0'..=b'9') => c,
                _ => b'-',
            };
            folded == *p
        })
}

/// The items of a comma-separated header (every value of `name`), each
/// trimmed, empty ones dropped: `Connection`, `Content-Encoding`.
pub fn list_items<'h>(
    headers: &'h http::HeaderMap,
    name: http::header::HeaderName,
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}
