//! The verified facts the upstream receives as `X-Consent-*` headers on allow
//! (SPEC sections 5 and 12). Only these headers carry verified facts; the
//! caller strips every client-sent `x-consent-*` header before adding them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::policy::Authorized;

pub const X_CONSENT_ID: HeaderName = HeaderName::from_static("x-consent-id");
pub const X_CONSENT_FROM: HeaderName = HeaderName::from_static("x-consent-from");
pub const X_CONSENT_SUBJECT_TYPE: HeaderName = HeaderName::from_static("x-consent-subject-type");
pub const X_CONSENT_SUBJECT: HeaderName = HeaderName::from_static("x-consent-subject");
pub const X_CONSENT_TO: HeaderName = HeaderName::from_static("x-consent-to");
pub const X_CONSENT_CONSENTED: HeaderName = HeaderName::from_static("x-consent-consented");
pub const X_CONSENT_VALID_TO: HeaderName = HeaderName::from_static("x-consent-valid-to");
pub const X_CONSENT_RESOURCE: HeaderName = HeaderName::from_static("x-consent-resource");
pub const X_CONSENT_METADATA: HeaderName = HeaderName::from_static("x-consent-metadata");
pub const X_CONSENT_CONSUMER: HeaderName = HeaderName::from_static("x-consent-consumer");
pub const X_CONSENT_SUPPLIER: HeaderName = HeaderName::from_static("x-consent-supplier");
pub const X_CONSENT_CLIENT_ID: HeaderName = HeaderName::from_static("x-consent-client-id");
pub const X_CONSENT_SCOPE: HeaderName = HeaderName::from_static("x-consent-scope");
pub const X_CONSENT_TOKEN_ID: HeaderName = HeaderName::from_static("x-consent-token-id");
/// Prefix of the per-key metadata headers.
pub const METADATA_HEADER_PREFIX: &str = "x-consent-metadata-";

/// Bytes percent-encoded in a per-key metadata header value: `%` and every
/// byte that is not visible ASCII (non-ASCII bytes are always encoded).
const NOT_VISIBLE_ASCII: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// The headers to add upstream for an allowed request, each name once with
/// one header-safe value. `auth: token` routes (no consent facts) get only
/// the token headers; `auth: none` routes get none.
pub fn verified_headers(a: &Authorized) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    let mut add = |name: HeaderName, value: &str| {
        // Claims with control characters were refused at check 10; this
        // guard keeps even a programming error from emitting an unsafe value.
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            out.push((name, value));
        }
    };
    if let Some(consent) = &a.consent {
        add(X_CONSENT_ID, &consent.id);
        add(X_CONSENT_FROM, &consent.from);
        add(X_CONSENT_SUBJECT_TYPE, consent.subject_type.as_str());
        add(X_CONSENT_SUBJECT, &consent.subject);
        add(X_CONSENT_TO, &consent.to);
        add(X_CONSENT_CONSENTED, &consent.consented);
        add(X_CONSENT_VALID_TO, &consent.valid_to);
        add(X_CONSENT_RESOURCE, &consent.resource);
        if !consent.metadata.is_empty() {
            add(X_CONSENT_METADATA, &metadata_json_b64(&consent.metadata));
            for (key, value) in &consent.metadata {
                if key.is_empty() {
                    continue;
                }
                let Ok(name) =
                    HeaderName::from_bytes(format!("{METADATA_HEADER_PREFIX}{key}").as_bytes())
                else {
                    continue;
                };
                add(
                    name,
                    &utf8_percent_encode(value, NOT_VISIBLE_ASCII).to_string(),
                );
            }
        }
    }
    if let Some(token) = &a.token {
        add(X_CONSENT_CONSUMER, &token.consumer);
        if let Some(supplier) = &token.supplier {
            add(X_CONSENT_SUPPLIER, supplier);
        }
        if let Some(client_id) = &token.client_id {
            add(X_CONSENT_CLIENT_ID, client_id);
        }
        if let Some(scope) = &token.scope {
            add(X_CONSENT_SCOPE, scope);
        }
        if let Some(jti) = &token.jti {
            add(X_CONSENT_TOKEN_ID, jti);
        }
    }
    out
}

/// base64url (no padding) of the compact JSON object of the metadata, keys
/// (already lowercased) sorted.
fn metadata_json_b64(metadata: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = metadata.iter().collect();
    sorted.sort();
    let mut json = String::from("{");
    for (i, (key, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&serde_json::Value::from(key.as_str()).to_string());
        json.push(':');
        json.push_str(&serde_json::Value::from(value.as_str()).to_string());
    }
    json.push('}');
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

    fn get<'a>(headers: &'a [(HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        let all: Vec<_> = headers.iter().filter(|(n, _)| n == name).collect();
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
    fn unsafe_values_are_never_emitted() {
        let mut token = token_facts();
        token.scope = Some("a\r\nX-Evil: 1".into());
        let h = verified_headers(&Authorized {
            token: Some(token),
            consent: None,
        });
        assert_eq!(get(&h, "x-consent-scope"), None);
    }
}
