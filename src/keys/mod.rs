//! Signing keys: the pure key set (`keyset`), the per-issuer cache with its
//! refresh and stale rules (`cache`), the only JWKS network code (`fetch`),
//! and the issuer-name -> cache map kept across reloads (`registry`).

pub mod cache;
pub mod fetch;
pub mod keyset;
pub mod registry;

pub use cache::{IssuerKeys, IssuerStatus, RefreshError};
pub use fetch::{FetchError, HttpJwksFetcher, JwksFetcher};
pub use keyset::{KeySet, KeySetError, VerifyingKey};
pub use registry::{FetcherFactory, KeyRegistry};

use std::fmt;
use std::str::FromStr;

/// A JWS algorithm the gateway can verify. `none` and HS* do not exist here,
/// so no configuration or token can select them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

impl Alg {
    pub const ALL: [Alg; 8] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
    ];

    /// The `alg` header value, exactly as JOSE writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    /// The JWK `kty` a key must have to verify this algorithm.
    pub fn key_type(self) -> &'static str {
        match self {
            Alg::ES256 | Alg::ES384 => "EC",
            _ => "RSA",
        }
    }

    /// The jsonwebtoken algorithm of the same name (for minting test tokens).
    pub fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Alg::RS256 => J::RS256,
            Alg::RS384 => J::RS384,
            Alg::RS512 => J::RS512,
            Alg::PS256 => J::PS256,
            Alg::PS384 => J::PS384,
            Alg::PS512 => J::PS512,
            Alg::ES256 => J::ES256,
            Alg::ES384 => J::ES384,
        }
    }
}

impl FromStr for Alg {
    type Err = ();

    /// Exact, case-sensitive: `rs256` or `none` is not an algorithm here.
    fn from_str(s: &str) -> Result<Self, ()> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s).ok_or(())
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
