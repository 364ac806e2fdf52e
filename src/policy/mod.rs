//! The decision core: pure, synchronous, no I/O. Given a compiled route, the
//! issuers' current key sets, the request's facts and the time, it decides
//! allow or deny with a stable reason. It never sees a socket or the clock.
//!
//! - `decide`: checks 0-21 and the report-only rule, the one entry point
//!   every door (proxy, `explain`, authorization endpoints) calls.
//! - `routes`: host / path-template / method matching (checks 1-2), and
//!   request path normalisation.
//! - `auth`: checks 3-21 in order, over `jws` (strict compact JWS, check
//!   4-5), `claims` (typed claims, check 10), `consent` (checks 15-21) and the
//!   verified-token cache `token_cache`.
//! - `forward`: the verified `X-Consent-*` headers set on allow.
//! - `headers`: what is stripped from the client request.

use std::sync::Arc;

use crate::clock::UnixTime;
use crate::config::{Issuer, RouteAuth};
use crate::error::Reason;
use crate::keys::KeySet;

pub mod auth;
pub mod body;
pub mod claims;
pub mod consent;
pub mod decide;
pub mod extract;
pub mod forward;
pub mod jws;
pub mod token;
pub mod token_cache;
pub mod trace;
pub mod verify;

pub use auth::{authorize, authorize_without_signature};
pub use decide::{decide, Checking, Generation, Refusal, RequestFacts, Routed, Verdict};
pub use forward::verified_headers;
pub use token_cache::TokenCache;

/// Where the decision core finds an issuer's keys. `None` means the issuer
/// has no usable keys right now (never fetched, or stale beyond
/// `jwks_max_stale`): check 7, `keys_unavailable`.
pub trait KeySource: Sync {
    /// `issuer` is an index into `Snapshot::issuers` / `Config::issuers`.
    fn keys(&self, issuer: usize) -> Option<Arc<KeySet>>;
}

/// The parts of a request the token and consent checks read. Built by the
/// proxy glue from the pingora request; plain data, so tests build it by hand.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Every request header (for `Authorization` and header bindings).
    pub headers: &'a http::HeaderMap,
    /// The raw query string without `?` (for `access_token` and query bindings).
    pub query: Option<&'a str>,
    /// Path parameters bound by the route template, from the normalised path,
    /// still percent-encoded (the policy decodes before comparing).
    pub path_params: &'a [(String, String)],
    /// The parsed body, when the route binds it.
    pub body: Option<&'a body::ParsedBody<'a>>,
}

/// Everything `authorize` needs besides the request.
pub struct AuthContext<'a> {
    pub route: &'a RouteAuth,
    pub issuers: &'a [Issuer],
    /// `server.max_token_bytes`.
    pub max_token_bytes: usize,
    pub keys: &'a dyn KeySource,
    pub now: UnixTime,
    /// The verified-token cache, shared by all requests; `None` verifies
    /// every signature.
    pub cache: Option<&'a TokenCache>,
}

/// The kind of data subject named by a consent's `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectType {
    Person,
    Organization,
}

impl SubjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectType::Person => "person",
            SubjectType::Organization => "organization",
        }
    }
}

/// Verified facts of the token (`auth: token` and `auth: consent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// Name of the issuer (config `issuers[].name`) that signed it.
    pub issuer: String,
    pub consumer: String,
    pub supplier: Option<String>,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub jti: Option<String>,
}

/// Verified facts of the consent element and right that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentFacts {
    pub id: String,
    /// `from`, the full URN.
    pub from: String,
    pub subject_type: SubjectType,
    /// The identifier part of `from`.
    pub subject: String,
    /// The recipient as `0192:<orgnr>`.
    pub to: String,
    /// `consented` and `validTo`, exactly as in the token.
    pub consented: String,
    pub valid_to: String,
    /// The configured resource that matched.
    pub resource: String,
    /// The matching right's metadata, keys lowercased, sorted by key.
    pub metadata: Vec<(String, String)>,
}

/// An allowed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authorized {
    /// `None` on `auth: none` routes.
    pub token: Option<TokenFacts>,
    /// `Some` only on `auth: consent` routes.
    pub consent: Option<ConsentFacts>,
    /// The `X-Consent-*` headers of these facts, when the verified token's
    /// memo attached them (`forward::verified_headers` builds them if not).
    pub headers: forward::SharedHeaders,
}

/// What is known of a denied request, for the audit log. Filled only with
/// facts from a token whose signature verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeniedFacts {
    pub consumer: Option<String>,
    pub subject: Option<String>,
    pub consent_id: Option<String>,
}

/// A denied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: Reason,
    /// Set with `UnknownKey` when a refetch of this issuer's JWKS might help:
    /// `(issuer index, kid)`. The glue refetches (single-flight, rate
    /// limited) and, if the key set changed, decides once more.
    pub refetch: Option<(usize, String)>,
    pub facts: DeniedFacts,
}

impl Denied {
    pub fn new(reason: Reason) -> Self {
        Self {
            reason,
            refetch: None,
            facts: DeniedFacts::default(),
        }
    }
}

/// One line of an `explain` trace: a check, in order, and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The check's number in SPEC section 4.
    pub number: u8,
    pub name: &'static str,
    pub passed: bool,
    /// What was compared (never a token; identity numbers masked).
    pub detail: String,
}

pub mod headers;
pub mod routes;
