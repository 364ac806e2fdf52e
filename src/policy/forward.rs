//! The verified facts the upstream receives as `X-Consent-*` headers on allow
//! (SPEC sections 5 and 12). Only these headers carry verified facts; the
//! caller strips every client-sent `x-consent-*` header before adding them.
//! A verified token keeps the last set built for it (`HeaderMemo`), so a
//! cached token's requests share one set instead of building ~14 values.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::policy::Authorized;

pub const X_CONSENT_ID: &str = "x-consent-id";
pub const X_CONSENT_FROM: &str = "x-consent-from";
pub const X_CONSENT_SUBJECT_TYPE: &str = "x-consent-subject-type";
pub const X_CONSENT_SUBJECT: &str = "x-consent-subject";
pub const X_CONSENT_TO: &str = "x-consent-to";
pub const X_CONSENT_CONSENTED: &str = "x-consent-consented";
pub const X_CONSENT_VALID_TO: &str = "x-consent-valid-to";
pub const X_CONSENT_RESOURCE: &str = "x-consent-resource";
pub const X_CONSENT_METADATA: &str = "x-consent-metadata";
pub const X_CONSENT_CONSUMER: &str = "x-consent-consumer";
pub const X_CONSENT_SUPPLIER: &str = "x-consent-supplier";
pub const X_CONSENT_CLIENT_ID: &str = "x-consent-client-id";
pub const X_CONSENT_SCOPE: &str = "x-consent-scope";
pub const X_CONSENT_TOKEN_ID: &str = "x-consent-token-id";
/// Prefix of the per-key metadata headers.
pub const METADATA_HEADER_PREFIX: &str = "x-consent-metadata-";

/// Bytes percent-encoded in a per-key metadata header value: `%` and every
/// byte that is not visible ASCII (non-ASCII bytes are always encoded).
const NOT_VISIBLE_ASCII: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// The name of a verified header: lowercase, a valid header token. Fixed
/// names stay `&'static str` so that pingora's `insert_header` takes them
/// without copying; per-key metadata names are built once, as `Bytes` that
/// each request shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifiedName {
    Fixed(&'static str),
    /// `x-consent-metadata-<key>`: visible ASCII (a valid header name).
    Metadata(Bytes),
}

impl VerifiedName {
    pub fn as_str(&self) -> &str {
        match self {
            VerifiedName::Fixed(name) => name,
            // Built from a `String` that made a valid header name.
            VerifiedName::Metadata(name) => std::str::from_utf8(name).unwrap_or_default(),
        }
    }
}

/// The verified headers of an allowed request: shared, cloned by pointer.
pub type VerifiedHeaders = Arc<[(VerifiedName, HeaderValue)]>;

/// The headers an `Authorized` carries, built once per verified token and
/// facts. Not part of its equality: the facts are.
#[derive(Debug, Clone, Default)]
pub struct SharedHeaders(pub(crate) Option<VerifiedHeaders>);

impl PartialEq for SharedHeaders {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SharedHeaders {}

/// The last header set built for one verified token (kept in its cache
/// entry), with the facts it was built from. A token is nearly always used
/// on one route, so a later request finds the same facts and takes the set
/// as it is; other facts (another route's resource) build a new one. The
/// set is remembered from the token's second request on: a token used once
/// (the consent workload's k = 1) pays no copy of its facts.
#[derive(Default)]
pub struct HeaderMemo {
    seen: AtomicBool,
    last: ArcSwapOption<(Authorized, VerifiedHeaders)>,
}

impl std::fmt::Debug for HeaderMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderMemo")
    }
}

impl HeaderMemo {
    /// `authorized` with its headers: the memo's when its facts are these,
    /// else built (and remembered once the token is being reused).
    pub fn attach(&self, mut authorized: Authorized) -> Authorized {
        let last = self.last.load();
        let headers = match last.as_ref().filter(|m| m.0 == authorized) {
            Some(m) => Arc::clone(&m.1),
            None => {
                let built: VerifiedHeaders = build_headers(&authorized).into();
                if self.seen.swap(true, Ordering::Relaxed) {
                    self.last
                        .store(Some(Arc::new((authorized.clone(), Arc::clone(&built)))));
                }
                built
            }
        };
        authorized.headers = SharedHeaders(Some(headers));
        authorized
    }
}

/// The headers to add upstream for an allowed request, each name once with
/// one header-safe value. `auth: token` routes (no consent facts) get only
/// the token headers; `auth: none` routes get none. The set attached by
/// `HeaderMemo` when there is one.
pub fn verified_headers(a: &Authorized) -> VerifiedHeaders {
    match &a.headers.0 {
        Some(headers) => Arc::clone(headers),
        None => build_headers(a).into(),
    }
}

/// Every value is written into one buffer and each header value is a slice
/// of it: two allocations for the whole set instead of one per value, and
/// cloning a value for pingora is a reference count, not a copy.
fn build_headers(a: &Authorized) -> Vec<(VerifiedName, HeaderValue)> {
    let mut buffer = BytesMut::with_capacity(512);
    let mut spans: Vec<(VerifiedName, std::ops::Range<usize>)> = Vec::with_capacity(16);
    let mut add = |name: VerifiedName, value: &[u8]| {
        let start = buffer.len();
        buffer.extend_from_slice(value);
        spans.push((name, start..buffer.len()));
    };
    let fixed = VerifiedName::Fixed;
    if let Some(consent) = &a.consent {
        add(fixed(X_CONSENT_ID), consent.id.as_bytes());
        add(fixed(X_CONSENT_FROM), consent.from.as_bytes());
        add(
            fixed(X_CONSENT_SUBJECT_TYPE),
            consent.subject_type.as_str().as_bytes(),
        );
        add(fixed(X_CONSENT_SUBJECT), consent.subject.as_bytes());
        add(fixed(X_CONSENT_TO), consent.to.as_bytes());
        add(fixed(X_CONSENT_CONSENTED), consent.consented.as_bytes());
        add(fixed(X_CONSENT_VALID_TO), consent.valid_to.as_bytes());
        add(fixed(X_CONSENT_RESOURCE), consent.resource.as_bytes());
        if !consent.metadata.is_empty() {
            add(
                fixed(X_CONSENT_METADATA),
                metadata_json_b64(&consent.metadata).as_bytes(),
            );
            for (key, value) in &consent.metadata {
                let mut name = String::with_capacity(METADATA_HEADER_PREFIX.len() + key.len());
                name.push_str(METADATA_HEADER_PREFIX);
                name.push_str(key);
                // Only keys that make a valid header name get a header.
                if key.is_empty() || HeaderName::from_bytes(name.as_bytes()).is_err() {
                    continue;
                }
                let encoded: std::borrow::Cow<'_, str> =
                    utf8_percent_encode(value, NOT_VISIBLE_ASCII).into();
                add(VerifiedName::Metadata(name.into()), encoded.as_bytes());
            }
        }
    }
    if let Some(token) = &a.token {
        add(fixed(X_CONSENT_CONSUMER), token.consumer.as_bytes());
        if let Some(supplier) = &token.supplier {
            add(fixed(X_CONSENT_SUPPLIER), supplier.as_bytes());
        }
        if let Some(client_id) = &token.client_id {
            add(fixed(X_CONSENT_CLIENT_ID), client_id.as_bytes());
        }
        if let Some(scope) = &token.scope {
            add(fixed(X_CONSENT_SCOPE), scope.as_bytes());
        }
        if let Some(jti) = &token.jti {
            add(fixed(X_CONSENT_TOKEN_ID), jti.as_bytes());
        }
    }
    let values: Bytes = buffer.freeze();
    spans
        .into_iter()
        .filter_map(|(name, span)| {
            // Claims with control characters were refused at check 10; this
            // guard keeps even a programming error from emitting an unsafe
            // value.
            HeaderValue::from_maybe_shared(values.slice(span))
                .ok()
                .map(|value| (name, value))
        })
        .collect()
}

/// base64url (no padding) of the compact JSON object of the metadata, keys
/// (already lowercased) sorted.
fn metadata_json_b64(metadata: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = metadata.iter().collect();
    sorted.sort();
    let mut json = Vec::with_capacity(64);
    json.push(b'{');
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut json, key);
        json.push(b':');
        let _ = serde_json::to_writer(&mut json, value);
    }
    json.push(b'}');
    URL_SAFE_NO_PAD.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ConsentFacts, SubjectType, TokenFacts};

    fn token_facts() -> TokenFacts {
        TokenFacts {
            issuer: "mp".into(),
            consumer: "0192:310497460".into(),
            supplier: None,
            client_id: Some("60dc4612".into()),
            scope: Some("demo:inntekt.read other".into()),
            jti: Some("jti-1".into()),
        }
    }

    fn consent_facts(metadata: Vec<(&str, &str)>) -> ConsentFacts {
        ConsentFacts {
            id: "019ca7e2".into(),
            from: "urn:altinn:person:identifier-no:17839116535".into(),
            subject_type: SubjectType::Person,
            subject: "17839116535".into(),
            to: "0192:310497460".into(),
            consented: "2026-03-02T08:14:02.318877+00:00".into(),
            valid_to: "2026-09-02T08:13:40.5512+00:00".into(),
            resource: "demo-samtykke-inntekt".into(),
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn get<'a>(headers: &'a [(VerifiedName, HeaderValue)], name: &str) -> Option<&'a str> {
        let all: Vec<_> = headers.iter().filter(|(n, _)| n.as_str() == name).collect();
        assert!(all.len() <= 1, "{name} given twice");
        all.first().map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn consent_route_headers() {
        let a = Authorized {
            token: Some(token_facts()),
            consent: Some(consent_facts(vec![
                ("fraogmed", "2025-01"),
                ("navn", "Ærlig Øl 100%"),
                ("bad key", "x"),
                ("tilogmed", "2025-12"),
            ])),
            ..Default::default()
        };
        let h = verified_headers(&a);
        assert_eq!(get(&h, "x-consent-id"), Some("019ca7e2"));
        assert_eq!(
            get(&h, "x-consent-from"),
            Some("urn:altinn:person:identifier-no:17839116535")
        );
        assert_eq!(get(&h, "x-consent-subject-type"), Some("person"));
        assert_eq!(get(&h, "x-consent-subject"), Some("17839116535"));
        assert_eq!(get(&h, "x-consent-to"), Some("0192:310497460"));
        assert_eq!(
            get(&h, "x-consent-consented"),
            Some("2026-03-02T08:14:02.318877+00:00")
        );
        assert_eq!(
            get(&h, "x-consent-valid-to"),
            Some("2026-09-02T08:13:40.5512+00:00")
        );
        assert_eq!(get(&h, "x-consent-resource"), Some("demo-samtykke-inntekt"));
        assert_eq!(get(&h, "x-consent-consumer"), Some("0192:310497460"));
        assert_eq!(get(&h, "x-consent-supplier"), None);
        assert_eq!(get(&h, "x-consent-client-id"), Some("60dc4612"));
        assert_eq!(get(&h, "x-consent-scope"), Some("demo:inntekt.read other"));
        assert_eq!(get(&h, "x-consent-token-id"), Some("jti-1"));
        let json = URL_SAFE_NO_PAD
            .decode(get(&h, "x-consent-metadata").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"bad key":"x","fraogmed":"2025-01","navn":"Ærlig Øl 100%","tilogmed":"2025-12"}"#
        );
        assert_eq!(get(&h, "x-consent-metadata-fraogmed"), Some("2025-01"));
        assert_eq!(
            get(&h, "x-consent-metadata-navn"),
            Some("%C3%86rlig%20%C3%98l%20100%25")
        );
        assert!(!h.iter().any(|(n, _)| n.as_str().contains("bad")));
    }

    #[test]
    fn metadata_json_escapes_and_is_absent_when_empty() {
        let a = Authorized {
            token: Some(token_facts()),
            consent: Some(consent_facts(vec![("k", "a\"b\\c")])),
            ..Default::default()
        };
        let h = verified_headers(&a);
        let json = URL_SAFE_NO_PAD
            .decode(get(&h, "x-consent-metadata").unwrap())
            .unwrap();
        assert_eq!(json, br#"{"k":"a\"b\\c"}"#);
        let parsed: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(parsed["k"], "a\"b\\c");
        let none = Authorized {
            token: Some(token_facts()),
            consent: Some(consent_facts(vec![])),
            ..Default::default()
        };
        let h = verified_headers(&none);
        assert!(!h
            .iter()
            .any(|(n, _)| n.as_str().starts_with("x-consent-metadata")));
    }

    #[test]
    fn token_route_gets_token_headers_only() {
        let mut token = token_facts();
        token.supplier = Some("0192:303137211".into());
        token.jti = None;
        let h = verified_headers(&Authorized {
            token: Some(token),
            consent: None,
            ..Default::default()
        });
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-consent-consumer",
                "x-consent-supplier",
                "x-consent-client-id",
                "x-consent-scope"
            ]
        );
        assert!(verified_headers(&Authorized::default()).is_empty());
    }

    #[test]
    fn the_memo_shares_one_set_while_the_facts_are_the_same() {
        let memo = HeaderMemo::default();
        let facts = |month: &str| Authorized {
            token: Some(token_facts()),
            consent: Some(consent_facts(vec![("fraogmed", month)])),
            ..Default::default()
        };
        let once = verified_headers(&memo.attach(facts("2025-01")));
        let first = verified_headers(&memo.attach(facts("2025-01")));
        assert!(
            !Arc::ptr_eq(&once, &first),
            "remembered from the second use"
        );
        assert_eq!(&*once, &*first);
        let again = verified_headers(&memo.attach(facts("2025-01")));
        assert!(Arc::ptr_eq(&first, &again), "the same facts share a set");
        assert_eq!(&*first, &*build_headers(&facts("2025-01")));
        // Other facts (another route's binding) get their own set.
        let other = verified_headers(&memo.attach(facts("2025-02")));
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(get(&other, "x-consent-metadata-fraogmed"), Some("2025-02"));
        assert_eq!(get(&first, "x-consent-metadata-fraogmed"), Some("2025-01"));
    }

    #[test]
    fn unsafe_values_are_never_emitted() {
        let mut token = token_facts();
        token.scope = Some("a\r\nX-Evil: 1".into());
        let h = verified_headers(&Authorized {
            token: Some(token),
            consent: None,
            ..Default::default()
        });
        assert_eq!(get(&h, "x-consent-scope"), None);
    }
}
