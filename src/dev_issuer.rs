//! A development issuer: an RSA signing key with its JWKS, used by `demo`,
//! `token` and the tests to mint real RS256 tokens. Never for production.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::KeyPair as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::keys::Alg;

/// The DER bytes of the first PEM block (base64 between the `-----` lines).
fn pem_body(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(body).ok()
}

/// An RSA key pair with a key id, able to sign tokens and publish its JWKS.
pub struct DevIssuer {
    kid: String,
    encoding_key: EncodingKey,
    /// PKCS#8 PEM of the private key (for `token --key` round trips).
    private_pem: String,
    /// Public modulus and exponent, big-endian; absent when a PEM key could not be read back.
    public: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("kid", &self.kid).finish()
    }
}

/// Why a development issuer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("could not generate an RSA key")]
    Generate,
    #[error("not an RSA private key in PKCS#1 or PKCS#8 PEM: {0}")]
    BadPem(String),
    #[error("could not sign the token: {0}")]
    Sign(String),
}

impl DevIssuer {
    /// Generates a fresh 2048-bit RSA key.
    pub fn generate(kid: &str) -> Result<Self, DevIssuerError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| DevIssuerError::Generate)?;
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
            .map_err(|_| DevIssuerError::Generate)?;
        let private_pem = pem_wrap("PRIVATE KEY", der.as_ref());
        let encoding_key = EncodingKey::from_rsa_pem(private_pem.as_bytes())
            .map_err(|e| DevIssuerError::BadPem(e.to_string()))?;
        let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
        Ok(Self {
            kid: kid.to_string(),
            encoding_key,
            private_pem,
            public: Some((components.n, components.e)),
        })
    }

    /// Loads a PKCS#1 or PKCS#8 RSA private key PEM; its public part (for
    /// `jwk`, `token --print-jwks`) is derived from it.
    pub fn from_pem(kid: &str, pem: &[u8]) -> Result<Self, DevIssuerError> {
        let encoding_key =
            EncodingKey::from_rsa_pem(pem).map_err(|e| DevIssuerError::BadPem(e.to_string()))?;
        let public = pem_body(pem).and_then(|der| {
            let pair = KeyPair::from_pkcs8(&der)
                .or_else(|_| KeyPair::from_der(&der))
                .ok()?;
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            Some((components.n, components.e))
        });
        Ok(Self {
            kid: kid.to_string(),
            encoding_key,
            private_pem: String::from_utf8_lossy(pem).into_owned(),
            public,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }

    /// The public key as a JWK (`kty` RSA, `use` sig, `alg` RS256).
    pub fn jwk(&self) -> serde_json::Value {
        let (n, e) = self
            .public
            .as_ref()
            .map(|(n, e)| (URL_SAFE_NO_PAD.encode(n), URL_SAFE_NO_PAD.encode(e)))
            .unwrap_or_default();
        serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": n, "e": e})
    }

    /// A JWKS document holding this key.
    pub fn jwks_json(&self) -> String {
        serde_json::json!({ "keys": [self.jwk()] }).to_string()
    }

    /// Signs `claims` with RS256 and a header of exactly `kid` and `alg`,
    /// as Maskinporten does.
    pub fn sign<T: Serialize>(&self, claims: &T) -> String {
        self.sign_with(Alg::RS256, claims)
            .expect("RS256 signing with a valid RSA key")
    }

    /// Signs with another RSA algorithm.
    pub fn sign_with<T: Serialize>(&self, alg: Alg, claims: &T) -> Result<String, DevIssuerError> {
        let mut header = Header::new(alg.to_jsonwebtoken());
        header.typ = None;
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key)
            .map_err(|e| DevIssuerError::Sign(e.to_string()))
    }

    /// Signs an arbitrary header and payload JSON (attack tests need headers
    /// jsonwebtoken would never write). RS256 over `b64(header).b64(payload)`.
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload_json)
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &self.encoding_key,
            jsonwebtoken::Algorithm::RS256,
        )
        .expect("RS256 signing with a valid RSA key");
        format!("{message}.{signature}")
    }
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Splits a compact token into its signed message and decoded signature.
pub fn split_signature(token: &str) -> (String, Vec<u8>) {
    let (message, signature) = token.rsplit_once('.').unwrap_or((token, ""));
    (
        message.to_string(),
        URL_SAFE_NO_PAD.decode(signature).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the crypto backend: jsonwebtoken picks it at run time, so a
    /// feature mix-up compiles and then panics here.
    #[test]
    fn mints_a_token_jsonwebtoken_itself_verifies() {
        let issuer = DevIssuer::generate("k").unwrap();
        let token = issuer.sign(&serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}));
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(issuer.jwk()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "x");
        assert_eq!(data.header.kid.as_deref(), Some("k"));
    }

    #[test]
    fn pem_round_trip_signs_the_same_way() {
        let issuer = DevIssuer::generate("k").unwrap();
        let again = DevIssuer::from_pem("k", issuer.private_pem().as_bytes()).unwrap();
        let claims = serde_json::json!({"a": 1});
        assert_eq!(issuer.sign(&claims), again.sign(&claims));
        assert!(DevIssuer::from_pem("k", b"not a pem").is_err());
    }
}

/// The facts of a test token, shaped as Maskinporten writes them.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub iss: String,
    pub scope: String,
    /// `0192:<orgnr>`.
    pub consumer: String,
    pub supplier: Option<String>,
    /// A URN, or a bare 11-digit (person) or 9-digit (organisation) number.
    pub from: Option<String>,
    pub resource: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// RFC 3339; default 30 days after `now`.
    pub valid_to: Option<String>,
    /// Seconds from `iat` to `exp`.
    pub ttl_seconds: u64,
}

impl Default for TokenSpec {
    fn default() -> Self {
        Self {
            iss: "https://test.maskinporten.no/".into(),
            scope: "demo:inntekt.read".into(),
            consumer: "0192:310497460".into(),
            supplier: None,
            from: None,
            resource: None,
            metadata: Vec::new(),
            valid_to: None,
            ttl_seconds: 120,
        }
    }
}

/// A `from` URN for a bare identifier: 11 digits a person, 9 an organisation.
pub fn subject_urn(from: &str) -> String {
    if from.starts_with("urn:") {
        return from.to_string();
    }
    if from.len() == 11 {
        format!("urn:altinn:person:identifier-no:{from}")
    } else {
        format!("urn:altinn:organization:identifier-no:{from}")
    }
}

fn iso6523(id: &str) -> serde_json::Value {
    serde_json::json!({"authority": "iso6523-actorid-upis", "ID": id})
}

impl TokenSpec {
    /// The claims, issued at `now` (Unix seconds). A consent element is
    /// included when `from` or `resource` is set.
    pub fn claims(&self, now: i64) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "scope": self.scope,
            "iss": self.iss,
            "client_amr": "private_key_jwt",
            "token_type": "Bearer",
            "exp": now + self.ttl_seconds as i64,
            "iat": now,
            "client_id": uuid::Uuid::new_v4().to_string(),
            "jti": URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
            "consumer": iso6523(&self.consumer),
        });
        if let Some(supplier) = &self.supplier {
            claims["supplier"] = iso6523(supplier);
            claims["delegation_source"] = "https://tt02.altinn.no/".into();
        }
        if self.from.is_some() || self.resource.is_some() {
            let at = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
            };
            let mut right = serde_json::json!({
                "action": ["consent"],
                "resource": [{"type": "urn:altinn:resource",
                              "value": self.resource.clone().unwrap_or_else(|| "demo-samtykke-inntekt".into())}],
            });
            if !self.metadata.is_empty() {
                let map: serde_json::Map<String, serde_json::Value> = self
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                right["metadata"] = serde_json::Value::Object(map);
            }
            claims["authorization_details"] = serde_json::json!([{
                "type": "urn:altinn:consent",
                "id": uuid::Uuid::new_v4().to_string(),
                "from": subject_urn(self.from.as_deref().unwrap_or("17839116535")),
                "to": iso6523(&self.consumer),
                "consented": at(now - 3600),
                "validTo": self.valid_to.clone().unwrap_or_else(|| at(now + 30 * 86400)),
                "consentRights": [right],
            }]);
        }
        claims
    }
}
