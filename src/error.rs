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
    pub const ALL: [Reason; 32] = [
        Reason::InvalidRequest,
        Reason::InvalidTokenRequest,
        Reason::HeadersTooLarge,
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
            Reason::KeysUnavailable | Reason::StateUnavailable => 503,
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
            | Reason::MethodNotAllowed
            | Reason::NoRoute
            | Reason::KeysUnavailable
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

    /// Seconds for `Retry-After`, on refusals a client should retry later.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            Reason::KeysUnavailable => Some(5),
            Reason::StateUnavailable => Some(1),
            // `RateLimited` carries its own, computed by the limiter.
            _ => None,
        }
    }

    /// The `application/problem+json` body (RFC 9457). It never echoes the
    /// token or a personal identifier: only fixed text and the request id.
    pub fn problem_body(self, request_id: &str) -> Vec<u8> {
        #[derive(Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'static str,
            status: u16,
            reason: &'static str,
            request_id: &'a str,
        }
        let problem = Problem {
            kind: format!("urn:consent-gateway:{}", self.code()),
            title: self.title(),
            status: self.status(),
            reason: self.code(),
            request_id,
        };
        serde_json::to_vec(&problem).unwrap_or_default()
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
        let body = Reason::ConsentExpired.problem_body("req-1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "urn:consent-gateway:consent_expired");
        assert_eq!(v["status"], 403);
        assert_eq!(v["reason"], "consent_expired");
        assert_eq!(v["request_id"], "req-1");
        assert!(v["title"].as_str().unwrap().len() > 3);
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
    }
}
