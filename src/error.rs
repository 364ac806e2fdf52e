//! Every way a request is refused, and the one mapping from a refusal to its
//! status, stable reason code, `WWW-Authenticate` challenge and problem body.

use serde::Serialize;

/// A refusal reason. Each variant maps to exactly one stable reason code
/// (SPEC section 4); the mapping lives only in this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Malformed HTTP (duplicate `Host`, unsafe path, a bound value given twice).
    InvalidRequest,
    /// The bearer credential is present but malformed (check 3): same code as
    /// `InvalidRequest`, but it carries the RFC 6750 `invalid_request` challenge.
    InvalidTokenRequest,
    HeadersTooLarge,
    /// A body a route binds is larger than its `max_body_bytes`.
    BodyTooLarge,
    /// A body a route binds is not of the bound kind, or is compressed.
    UnsupportedMediaType,
    MethodNotAllowed,
    NoRoute,
    MissingToken,
    MalformedToken,
    UnknownKey,
    IssuerNotAllowed,
    AlgorithmNotAllowed,
    KeysUnavailable,
    BadSignature,
    MissingClaim,
    TokenExpired,
    TokenNotYetValid,
    TokenLifetimeTooLong,
    AudienceMismatch,
    InsufficientScope,
    SupplierNotAllowed,
    ConsumerNotAllowed,
    /// SPEC section 13: the consumer is on no usable list and one of the
    /// route's Altinn access lists has no copy younger than `max_stale`.
    AccessListUnavailable,
    ConsentMissing,
    ConsentRecipientMismatch,
    ConsentNotYetValid,
    ConsentExpired,
    ConsentResourceMismatch,
    ConsentSubjectMismatch,
    ConsentMetadataMismatch,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// A one-time consent that was already used (SPEC section 13).
    ConsentAlreadyUsed,
    /// Beyond the route's `rate_limit` (SPEC section 13).
    RateLimited,
    /// The shared-state store is unreachable on a route that needs it.
    StateUnavailable,
}

/// The RFC 6750 challenge a refusal carries, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// No `WWW-Authenticate` header at all.
    None,
    /// `Bearer realm="consent-gateway"` with no `error` (no token presented).
    Bare,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl Reason {
    /// Every reason, for tests and for pre-registering metric label values.
    pub const ALL: [Reason; 35] = [
        Reason::InvalidRequest,
        Reason::InvalidTokenRequest,
        Reason::HeadersTooLarge,
        Reason::BodyTooLarge,
        Reason::UnsupportedMediaType,
        Reason::MethodNotAllowed,
        Reason::NoRoute,
        Reason::MissingToken,
        Reason::MalformedToken,
        Reason::UnknownKey,
        Reason::IssuerNotAllowed,
        Reason::AlgorithmNotAllowed,
        Reason::KeysUnavailable,
        Reason::BadSignature,
        Reason::MissingClaim,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::TokenLifetimeTooLong,
        Reason::AudienceMismatch,
        Reason::InsufficientScope,
        Reason::SupplierNotAllowed,
        Reason::ConsumerNotAllowed,
        Reason::AccessListUnavailable,
        Reason::ConsentMissing,
        Reason::ConsentRecipientMismatch,
        Reason::ConsentNotYetValid,
        Reason::ConsentExpired,
        Reason::ConsentResourceMismatch,
        Reason::ConsentSubjectMismatch,
        Reason::ConsentMetadataMismatch,
        Reason::UpstreamUnavailable,
        Reason::UpstreamTimeout,
        Reason::ConsentAlreadyUsed,
        Reason::RateLimited,
        Reason::StateUnavailable,
    ];

    /// The stable reason code (SPEC section 4): used in bodies, metrics, logs.
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidRequest | Reason::InvalidTokenRequest => "invalid_request",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::BodyTooLarge => "body_too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::NoRoute => "no_route",
            Reason::MissingToken => "missing_token",
            Reason::MalformedToken => "malformed_token",
            Reason::UnknownKey => "unknown_key",
            Reason::IssuerNotAllowed => "issuer_not_allowed",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::BadSignature => "bad_signature",
            Reason::MissingClaim => "missing_claim",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenLifetimeTooLong => "token_lifetime_too_long",
            Reason::AudienceMismatch => "audience_mismatch",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::SupplierNotAllowed => "supplier_not_allowed",
            Reason::ConsumerNotAllowed => "consumer_not_allowed",
            Reason::AccessListUnavailable => "access_list_unavailable",
            Reason::ConsentMissing => "consent_missing",
            Reason::ConsentRecipientMismatch => "consent_recipient_mismatch",
            Reason::ConsentNotYetValid => "consent_not_yet_valid",
            Reason::ConsentExpired => "consent_expired",
            Reason::ConsentResourceMismatch => "consent_resource_mismatch",
            Reason::ConsentSubjectMismatch => "consent_subject_mismatch",
            Reason::ConsentMetadataMismatch => "consent_metadata_mismatch",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::ConsentAlreadyUsed => "consent_already_used",
            Reason::RateLimited => "rate_limited",
            Reason::StateUnavailable => "state_unavailable",
        }
    }

    /// The HTTP status of a refusal for this reason.
    pub fn status(self) -> u16 {
        match self {
            Reason::InvalidRequest | Reason::InvalidTokenRequest => 400,
            Reason::HeadersTooLarge => 431,
            Reason::BodyTooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::MethodNotAllowed => 405,
            Reason::NoRoute => 404,
            Reason::MissingToken
            | Reason::MalformedToken
            | Reason::UnknownKey
            | Reason::IssuerNotAllowed
            | Reason::AlgorithmNotAllowed
            | Reason::BadSignature
            | Reason::MissingClaim
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::TokenLifetimeTooLong
            | Reason::AudienceMismatch => 401,
            Reason::KeysUnavailable | Reason::AccessListUnavailable | Reason::StateUnavailable => {
                503
            }
            Reason::RateLimited => 429,
            Reason::InsufficientScope
            | Reason::SupplierNotAllowed
            | Reason::ConsumerNotAllowed
            | Reason::ConsentMissing
            | Reason::ConsentRecipientMismatch
            | Reason::ConsentNotYetValid
            | Reason::ConsentExpired
            | Reason::ConsentResourceMismatch
            | Reason::ConsentSubjectMismatch
            | Reason::ConsentMetadataMismatch
            | Reason::ConsentAlreadyUsed => 403,
            Reason::UpstreamUnavailable => 502,
            Reason::UpstreamTimeout => 504,
        }
    }

    /// The short human title of the problem body.
    pub fn title(self) -> &'static str {
        match self {
            Reason::InvalidRequest => "The request is malformed",
            Reason::InvalidTokenRequest => "The bearer credential is malformed",
            Reason::HeadersTooLarge => "Request header fields too large",
            Reason::BodyTooLarge => "The request body is larger than this route accepts",
            Reason::UnsupportedMediaType => "The request body is not of a type this route reads",
            Reason::MethodNotAllowed => "Method not allowed on this route",
            Reason::NoRoute => "No route matches this request",
            Reason::MissingToken => "A bearer token is required",
            Reason::MalformedToken => "The token is malformed",
            Reason::UnknownKey => "The token's signing key is unknown",
            Reason::IssuerNotAllowed => "The token's issuer is not accepted on this route",
            Reason::AlgorithmNotAllowed => "The token's algorithm is not accepted",
            Reason::KeysUnavailable => "The issuer's signing keys are unavailable",
            Reason::BadSignature => "The token's signature is invalid",
            Reason::MissingClaim => "The token lacks a required claim",
            Reason::TokenExpired => "The token has expired",
            Reason::TokenNotYetValid => "The token is not yet valid",
            Reason::TokenLifetimeTooLong => "The token's lifetime is too long",
            Reason::AudienceMismatch => "The token is not meant for this audience",
            Reason::InsufficientScope => "The token lacks a required scope",
            Reason::SupplierNotAllowed => "The supplier is not allowed to act here",
            Reason::ConsumerNotAllowed => "The consumer is not allowed on this route",
            Reason::AccessListUnavailable => "The route's access list is unavailable",
            Reason::ConsentMissing => "The token carries no consent",
            Reason::ConsentRecipientMismatch => "The consent was not given to this consumer",
            Reason::ConsentNotYetValid => "The consent is not yet valid",
            Reason::ConsentExpired => "The consent has expired",
            Reason::ConsentResourceMismatch => "The consent does not cover this resource",
            Reason::ConsentSubjectMismatch => "The consent does not cover this data subject",
            Reason::ConsentMetadataMismatch => "The consent's metadata does not cover this request",
            Reason::UpstreamUnavailable => "The upstream is unavailable",
            Reason::UpstreamTimeout => "The upstream timed out",
            Reason::ConsentAlreadyUsed => "The one-time consent was already used",
            Reason::RateLimited => "Too many requests for this consumer",
            Reason::StateUnavailable => "The shared state store is unavailable",
        }
    }

    /// What a data consumer should do about this refusal: the advice column
    /// of the consumer documentation (`consent-gateway docs`) and of the
    /// README's reason table, both generated from here.
    pub fn consumer_advice(self) -> &'static str {
        match self {
            Reason::InvalidRequest => "Fix the request: one `Host`, a plain path (no encoded `/`, `\\` or dot segments above the root), and each bound value (subject, metadata) given exactly once.",
            Reason::InvalidTokenRequest => "Send exactly one `Authorization: Bearer <token>` header with one token and nothing else; never put `access_token` in the query.",
            Reason::HeadersTooLarge => "Send a smaller header block (fewer or shorter headers, no oversized cookies).",
            Reason::BodyTooLarge => "Send a smaller request body: this route reads the body and accepts at most its `max_body_bytes`.",
            Reason::UnsupportedMediaType => "Send the body uncompressed, with the `Content-Type` this route reads (`application/json`, or `application/x-www-form-urlencoded` for form fields).",
            Reason::MethodNotAllowed => "Use one of the methods listed in the `Allow` header (and never `CONNECT`).",
            Reason::NoRoute => "Check the host and path against this documentation: no route serves them.",
            Reason::MissingToken => "Get an access token from Maskinporten (client credentials grant) and send it as `Authorization: Bearer <token>`.",
            Reason::MalformedToken => "Send the access token exactly as Maskinporten issued it (compact JWS, not too large, not altered).",
            Reason::UnknownKey => "Get a fresh token from the issuer this route accepts; if it persists, contact the service owner (the signing key is unknown).",
            Reason::IssuerNotAllowed => "Get the token from the Maskinporten environment this route accepts (test or production, see the issuer above).",
            Reason::AlgorithmNotAllowed => "Get a token signed with an algorithm the issuer is configured for (Maskinporten: RS256).",
            Reason::KeysUnavailable => "Retry after the seconds in `Retry-After`; the gateway cannot reach the issuer's keys right now.",
            Reason::BadSignature => "Send the token unaltered, exactly as the issuer signed it, and get it from the accepted issuer.",
            Reason::MissingClaim => "Get a token with `exp` and `consumer` (and `iat`): request it from Maskinporten with your own client, not hand-made.",
            Reason::TokenExpired => "Get a new access token from Maskinporten; the one sent has expired.",
            Reason::TokenNotYetValid => "Check your clock and retry: the token's `nbf` or `iat` lies in the future.",
            Reason::TokenLifetimeTooLong => "Request a token with a shorter lifetime (`exp - iat` within the longest lifetime the issuers table shows).",
            Reason::AudienceMismatch => "Request the token with the audience (`resource` parameter) this route expects.",
            Reason::InsufficientScope => "Request the token with every scope this route requires (see the scopes above); your Maskinporten client must have been granted them.",
            Reason::SupplierNotAllowed => "Call as the consumer itself, or ask the service owner to allow your supplier (see the delegation rules above).",
            Reason::ConsumerNotAllowed => "Ask the service owner (contact above) to add your organisation to the route's access list.",
            Reason::AccessListUnavailable => "Retry after the seconds in `Retry-After`: the gateway cannot confirm the service owner's access list in Altinn right now.",
            Reason::ConsentMissing => "Have the data subject give consent in Altinn and request the Maskinporten token with that consent (`authorization_details` of type `urn:altinn:consent`).",
            Reason::ConsentRecipientMismatch => "Use a consent given to your own organisation: the consent's recipient must be the token's consumer.",
            Reason::ConsentNotYetValid => "Wait until the consent's validity starts, or check your clock.",
            Reason::ConsentExpired => "Ask the data subject for a new consent in Altinn; the one in the token has expired.",
            Reason::ConsentResourceMismatch => "Request consent for the resource and actions this route requires (see above).",
            Reason::ConsentSubjectMismatch => "Call with the data subject who gave the consent, in the place shown above, and of an allowed type (person / organization).",
            Reason::ConsentMetadataMismatch => "Request consent with the metadata keys this route requires, and send the same values in the request where shown above.",
            Reason::UpstreamUnavailable => "Retry later; if it persists, contact the service owner (the backend is unavailable).",
            Reason::UpstreamTimeout => "Retry later, with a smaller request if you can; if it persists, contact the service owner.",
            Reason::ConsentAlreadyUsed => "Ask the data subject for a new consent in Altinn: this one is for one use only and was used.",
            Reason::RateLimited => "Slow down: retry after the seconds in `Retry-After`; the `RateLimit` and `RateLimit-Policy` headers show your allowance.",
            Reason::StateUnavailable => "Retry after the seconds in `Retry-After`; if it persists, contact the service owner (the gateway's shared state is unavailable).",
        }
    }

    /// Which RFC 6750 challenge this refusal carries. Only token and consent
    /// denials carry one.
    pub fn challenge(self) -> Challenge {
        match self {
            Reason::MissingToken => Challenge::Bare,
            Reason::InvalidTokenRequest => Challenge::InvalidRequest,
            Reason::MalformedToken
            | Reason::UnknownKey
            | Reason::IssuerNotAllowed
            | Reason::AlgorithmNotAllowed
            | Reason::BadSignature
            | Reason::MissingClaim
            | Reason::TokenExpired
            | Reason::TokenNotYetValid
            | Reason::TokenLifetimeTooLong
            | Reason::AudienceMismatch => Challenge::InvalidToken,
            Reason::InsufficientScope
            | Reason::SupplierNotAllowed
            | Reason::ConsumerNotAllowed
            | Reason::ConsentMissing
            | Reason::ConsentRecipientMismatch
            | Reason::ConsentNotYetValid
            | Reason::ConsentExpired
            | Reason::ConsentResourceMismatch
            | Reason::ConsentSubjectMismatch
            | Reason::ConsentMetadataMismatch
            | Reason::ConsentAlreadyUsed => Challenge::InsufficientScope,
            Reason::InvalidRequest
            | Reason::HeadersTooLarge
            | Reason::BodyTooLarge
            | Reason::UnsupportedMediaType
            | Reason::MethodNotAllowed
            | Reason::NoRoute
            | Reason::KeysUnavailable
            | Reason::AccessListUnavailable
            | Reason::UpstreamUnavailable
            | Reason::UpstreamTimeout
            | Reason::RateLimited
            | Reason::StateUnavailable => Challenge::None,
        }
    }

    /// The `WWW-Authenticate` header value, if this refusal carries one.
    pub fn www_authenticate(self) -> Option<&'static str> {
        match self.challenge() {
            Challenge::None => None,
            Challenge::Bare => Some(r#"Bearer realm="consent-gateway""#),
            Challenge::InvalidRequest => {
                Some(r#"Bearer realm="consent-gateway", error="invalid_request""#)
            }
            Challenge::InvalidToken => {
                Some(r#"Bearer realm="consent-gateway", error="invalid_token""#)
            }
            Challenge::InsufficientScope => {
                Some(r#"Bearer realm="consent-gateway", error="insufficient_scope""#)
            }
        }
    }

    /// The gRPC status code of this refusal on a `grpc: true` route (SPEC
    /// section 13), derived from its HTTP status: 401 UNAUTHENTICATED (16),
    /// 403 PERMISSION_DENIED (7), 502/503 UNAVAILABLE (14), 504
    /// DEADLINE_EXCEEDED (4), 400 INVALID_ARGUMENT (3); where SPEC is silent,
    /// gRPC's own HTTP mapping: 404/405 UNIMPLEMENTED (12), 413/429/431
    /// RESOURCE_EXHAUSTED (8), 415 INVALID_ARGUMENT (3), else UNKNOWN (2).
    pub fn grpc_status(self) -> u8 {
        match self.status() {
            400 | 415 => 3,
            401 => 16,
            403 => 7,
            404 | 405 => 12,
            413 | 429 | 431 => 8,
            502 | 503 => 14,
            504 => 4,
            _ => 2,
        }
    }

    /// Seconds for `Retry-After`, on refusals a client should retry later.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Reason::KeysUnavailable => Some(5),
            Reason::AccessListUnavailable => Some(30),
            Reason::StateUnavailable => Some(1),
            // `RateLimited` carries its own, computed by the limiter.
            _ => None,
        }
    }

    /// The `application/problem+json` body (RFC 9457). It never echoes the
    /// token or a personal identifier: only fixed text, the request id and,
    /// when `service.documentation_url` is set, `documentation` =
    /// `<documentation_url>#<reason>` (the reason's anchor in the page that
    /// `consent-gateway docs --format html` writes).
    pub fn problem_body(self, request_id: &str, documentation_url: Option<&str>) -> Vec<u8> {
        #[derive(Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'static str,
            status: u16,
            reason: &'static str,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            documentation: Option<String>,
        }
        let problem = Problem {
            kind: format!("urn:consent-gateway:{}", self.code()),
            title: self.title(),
            status: self.status(),
            reason: self.code(),
            request_id,
            documentation: documentation_url.map(|url| self.documentation_link(url)),
        };
        serde_json::to_vec(&problem).unwrap_or_default()
    }

    /// `<documentation_url>#<reason>`: where this reason is explained in the
    /// published consumer documentation (any fragment already on the URL is
    /// replaced).
    pub fn documentation_link(self, documentation_url: &str) -> String {
        let base = documentation_url
            .split_once('#')
            .map_or(documentation_url, |(base, _)| base);
        format!("{base}#{}", self.code())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// Pins every variant to its code, status and challenge, as SPEC section 4 says.
    #[test]
    fn every_reason_maps_to_its_contract() {
        let expected: &[(Reason, &str, u16, Challenge)] = &[
            (
                Reason::InvalidRequest,
                "invalid_request",
                400,
                Challenge::None,
            ),
            (
                Reason::InvalidTokenRequest,
                "invalid_request",
                400,
                Challenge::InvalidRequest,
            ),
            (
                Reason::HeadersTooLarge,
                "headers_too_large",
                431,
                Challenge::None,
            ),
            (Reason::BodyTooLarge, "body_too_large", 413, Challenge::None),
            (
                Reason::UnsupportedMediaType,
                "unsupported_media_type",
                415,
                Challenge::None,
            ),
            (
                Reason::MethodNotAllowed,
                "method_not_allowed",
                405,
                Challenge::None,
            ),
            (Reason::NoRoute, "no_route", 404, Challenge::None),
            (Reason::MissingToken, "missing_token", 401, Challenge::Bare),
            (
                Reason::MalformedToken,
                "malformed_token",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::UnknownKey,
                "unknown_key",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::IssuerNotAllowed,
                "issuer_not_allowed",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::AlgorithmNotAllowed,
                "algorithm_not_allowed",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::KeysUnavailable,
                "keys_unavailable",
                503,
                Challenge::None,
            ),
            (
                Reason::BadSignature,
                "bad_signature",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::MissingClaim,
                "missing_claim",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::TokenExpired,
                "token_expired",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::TokenNotYetValid,
                "token_not_yet_valid",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::TokenLifetimeTooLong,
                "token_lifetime_too_long",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::AudienceMismatch,
                "audience_mismatch",
                401,
                Challenge::InvalidToken,
            ),
            (
                Reason::InsufficientScope,
                "insufficient_scope",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::SupplierNotAllowed,
                "supplier_not_allowed",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsumerNotAllowed,
                "consumer_not_allowed",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::AccessListUnavailable,
                "access_list_unavailable",
                503,
                Challenge::None,
            ),
            (
                Reason::ConsentMissing,
                "consent_missing",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsentRecipientMismatch,
                "consent_recipient_mismatch",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsentNotYetValid,
                "consent_not_yet_valid",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsentExpired,
                "consent_expired",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsentResourceMismatch,
                "consent_resource_mismatch",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsentSubjectMismatch,
                "consent_subject_mismatch",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::ConsentMetadataMismatch,
                "consent_metadata_mismatch",
                403,
                Challenge::InsufficientScope,
            ),
            (
                Reason::UpstreamUnavailable,
                "upstream_unavailable",
                502,
                Challenge::None,
            ),
            (
                Reason::UpstreamTimeout,
                "upstream_timeout",
                504,
                Challenge::None,
            ),
            (
                Reason::ConsentAlreadyUsed,
                "consent_already_used",
                403,
                Challenge::InsufficientScope,
            ),
            (Reason::RateLimited, "rate_limited", 429, Challenge::None),
            (
                Reason::StateUnavailable,
                "state_unavailable",
                503,
                Challenge::None,
            ),
        ];
        assert_eq!(expected.len(), Reason::ALL.len());
        for (reason, code, status, challenge) in expected {
            assert_eq!(reason.code(), *code, "{reason:?}");
            assert_eq!(reason.status(), *status, "{reason:?}");
            assert_eq!(reason.challenge(), *challenge, "{reason:?}");
        }
    }

    #[test]
    fn problem_body_has_the_contract_fields() {
        let body = Reason::ConsentExpired.problem_body("req-1", None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "urn:consent-gateway:consent_expired");
        assert_eq!(v["status"], 403);
        assert_eq!(v["reason"], "consent_expired");
        assert_eq!(v["request_id"], "req-1");
        assert!(v["title"].as_str().unwrap().len() > 3);
    }

    #[test]
    fn problem_body_links_the_reason_anchor_when_documented() {
        let body = Reason::ConsentExpired.problem_body("req-1", None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("documentation").is_none());
        let body =
            Reason::InsufficientScope.problem_body("req-2", Some("https://docs.example.no/api"));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["documentation"],
            "https://docs.example.no/api#insufficient_scope"
        );
        assert_eq!(
            Reason::InvalidTokenRequest.documentation_link("http://x/d#old"),
            "http://x/d#invalid_request"
        );
    }

    #[test]
    fn grpc_statuses_follow_spec_13() {
        for reason in Reason::ALL {
            let expected = match reason.status() {
                401 => 16,
                403 => 7,
                502 | 503 => 14,
                504 => 4,
                400 => 3,
                _ => continue,
            };
            assert_eq!(reason.grpc_status(), expected, "{reason:?}");
        }
        assert_eq!(Reason::RateLimited.grpc_status(), 8);
        assert_eq!(Reason::NoRoute.grpc_status(), 12);
        // Never OK (0): the authorization endpoint's CheckResponse.status
        // takes the same code, and OK there would be an allow.
        assert!(Reason::ALL
            .iter()
            .all(|r| (1..=16).contains(&r.grpc_status())));
    }

    #[test]
    fn every_reason_has_advice() {
        for reason in Reason::ALL {
            assert!(reason.consumer_advice().len() > 20, "{reason:?}");
        }
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(
            Reason::MissingToken.www_authenticate(),
            Some(r#"Bearer realm="consent-gateway""#)
        );
        assert!(Reason::NoRoute.www_authenticate().is_none());
        assert!(Reason::UpstreamTimeout.www_authenticate().is_none());
        assert_eq!(Reason::KeysUnavailable.retry_after(), Some(5));
        assert_eq!(Reason::AccessListUnavailable.retry_after(), Some(30));
        assert!(Reason::AccessListUnavailable.www_authenticate().is_none());
    }
}
