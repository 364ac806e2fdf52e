//! An immutable `kid -> key` set parsed once from a JWKS document (pure, no
//! I/O). Only keys usable for signatures with the issuer's algorithms are
//! kept, and each is parsed into a ready-to-verify public key exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use thiserror::Error;

use super::Alg;

/// RSA keys shorter than this are not usable (SPEC section 12).
pub const MIN_RSA_BITS: usize = 2048;

/// Why a JWKS document was rejected as a whole.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeySetError {
    #[error("JWKS is not a JSON object with a \"keys\" array: {0}")]
    NotAJwks(String),
    #[error("JWKS has two keys with kid {0:?}")]
    DuplicateKid(String),
    #[error("JWKS has no key usable with the configured algorithms")]
    NoUsableKey,
}

/// One public key, parsed once, ready to verify with each algorithm it fits.
pub struct VerifyingKey {
    kid: String,
    /// The key material as published (`n`/`e` or `x`/`y`) with the JWK
    /// `alg`, to recognise an unchanged key across refreshes.
    fingerprint: String,
    verifiers: Vec<(Alg, ParsedPublicKey)>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field(
                "algorithms",
                &self.verifiers.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl VerifyingKey {
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Whether this key may verify `alg` (its `kty` fits, its JWK `alg` is
    /// absent or equal, and the issuer allows `alg`).
    pub fn supports(&self, alg: Alg) -> bool {
        self.verifiers.iter().any(|(a, _)| *a == alg)
    }

    /// Verifies `signature` (raw bytes, already base64url-decoded) over
    /// `message` (`header.payload` as sent). False for an algorithm this key
    /// does not support.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
    }
}

/// The usable keys of one issuer at one moment.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

/// The fields of a JWK the gateway reads. Everything else (`x5c`, `x5u`, ...)
/// is ignored: keys come only from the issuer's JWKS.
#[derive(Deserialize)]
struct RawJwk {
    kid: Option<String>,
    kty: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys usable with `algorithms`.
    /// Keys equal to one in `previous` are reused, not parsed again, so what
    /// was verified with them stays valid across refreshes.
    pub fn parse(
        jwks: &[u8],
        algorithms: &[Alg],
        previous: Option<&KeySet>,
    ) -> Result<KeySet, KeySetError> {
        let raw: RawJwks =
            serde_json::from_slice(jwks).map_err(|e| KeySetError::NotAJwks(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        let mut keys = HashMap::new();
        for value in raw.keys {
            // A key we cannot even read is skipped, like any unusable key.
            let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
                continue;
            };
            let Some(kid) = jwk.kid.clone() else { continue };
            if !seen.insert(kid.clone()) {
                return Err(KeySetError::DuplicateKid(kid));
            }
            let fingerprint = fingerprint(&jwk);
            if let Some(old) = previous.and_then(|p| p.keys.get(&kid)) {
                if old.fingerprint == fingerprint {
                    keys.insert(kid, Arc::clone(old));
                    continue;
                }
            }
            if let Some(key) = build_key(&jwk, kid.clone(), fingerprint, algorithms) {
                keys.insert(kid, Arc::new(key));
            }
        }
        if keys.is_empty() {
            return Err(KeySetError::NoUsableKey);
        }
        Ok(KeySet { keys })
    }

    /// The key with this `kid`, if present and usable.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Key ids, sorted.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.keys().cloned().collect();
        ids.sort();
        ids
    }
}

fn fingerprint(jwk: &RawJwk) -> String {
    let parts = [
        jwk.kty.as_deref(),
        jwk.use_.as_deref(),
        jwk.alg.as_deref(),
        jwk.n.as_deref(),
        jwk.e.as_deref(),
        jwk.crv.as_deref(),
        jwk.x.as_deref(),
        jwk.y.as_deref(),
    ];
    parts.map(|p| p.unwrap_or("")).join("|")
}

fn b64(s: &Option<String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(s.as_deref()?.trim_end_matches('='))
        .ok()
}

fn rsa_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    (n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize)
}

fn build_key(
    jwk: &RawJwk,
    kid: String,
    fingerprint: String,
    algorithms: &[Alg],
) -> Option<VerifyingKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let kty = jwk.kty.as_deref()?;
    let mut verifiers = Vec::new();
    for &alg in algorithms {
        if alg.key_type() != kty || jwk.alg.as_deref().is_some_and(|a| a != alg.as_str()) {
            continue;
        }
        if let Some(key) = parse_for(jwk, alg) {
            verifiers.push((alg, key));
        }
    }
    if verifiers.is_empty() {
        return None;
    }
    Some(VerifyingKey {
        kid,
        fingerprint,
        verifiers,
    })
}

fn parse_for(jwk: &RawJwk, alg: Alg) -> Option<ParsedPublicKey> {
    match alg {
        Alg::ES256 | Alg::ES384 => {
            let (crv, params, len): (&str, &'static sig::EcdsaVerificationAlgorithm, usize) =
                match alg {
                    Alg::ES256 => ("P-256", &sig::ECDSA_P256_SHA256_FIXED, 32),
                    _ => ("P-384", &sig::ECDSA_P384_SHA384_FIXED, 48),
                };
            if jwk.crv.as_deref() != Some(crv) {
                return None;
            }
            let (x, y) = (b64(&jwk.x)?, b64(&jwk.y)?);
            if x.len() != len || y.len() != len {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ParsedPublicKey::new(params, point).ok()
        }
        _ => {
            let (n, e) = (b64(&jwk.n)?, b64(&jwk.e)?);
            if rsa_bits(&n) < MIN_RSA_BITS {
                return None;
            }
            let params: &'static sig::RsaParameters = match alg {
                Alg::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                Alg::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                Alg::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                Alg::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                Alg::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            RsaPublicKeyComponents { n: &n, e: &e }
                .to_parsed_public_key(params)
                .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_issuer::{split_signature, DevIssuer as TestIssuer};

    #[test]
    fn parses_a_real_rsa_jwks_and_verifies_a_real_token() {
        let issuer = TestIssuer::generate("k1").unwrap();
        let set = KeySet::parse(issuer.jwks_json().as_bytes(), &[Alg::RS256], None).unwrap();
        assert_eq!(set.key_ids(), vec!["k1".to_string()]);
        let token = issuer.sign(&serde_json::json!({"iss": "x", "exp": 1}));
        let (message, signature) = split_signature(&token);
        let key = set.get("k1").unwrap();
        assert!(key.verify(Alg::RS256, message.as_bytes(), &signature));
        assert!(!key.verify(Alg::RS384, message.as_bytes(), &signature));
        let mut tampered = signature.clone();
        tampered[0] ^= 1;
        assert!(!key.verify(Alg::RS256, message.as_bytes(), &tampered));
    }

    #[test]
    fn duplicate_kid_rejects_the_whole_set() {
        let a = TestIssuer::generate("dup").unwrap();
        let jwk = a.jwk();
        let doc = serde_json::json!({"keys": [jwk.clone(), jwk]}).to_string();
        assert_eq!(
            KeySet::parse(doc.as_bytes(), &[Alg::RS256], None).unwrap_err(),
            KeySetError::DuplicateKid("dup".into())
        );
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let a = TestIssuer::generate("good").unwrap();
        let mut enc = a.jwk();
        enc["kid"] = "enc".into();
        enc["use"] = "enc".into();
        let mut other_alg = a.jwk();
        other_alg["kid"] = "ps".into();
        other_alg["alg"] = "PS256".into();
        let mut no_kid = a.jwk();
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut short = a.jwk();
        short["kid"] = "short".into();
        short["n"] = URL_SAFE_NO_PAD.encode([0xffu8; 128]).into(); // 1024 bits
        let hmac = serde_json::json!({"kty": "oct", "kid": "hs", "k": "c2VjcmV0"});
        let doc = serde_json::json!({"keys": [a.jwk(), enc, other_alg, no_kid, short, hmac]});
        let set = KeySet::parse(doc.to_string().as_bytes(), &[Alg::RS256], None).unwrap();
        assert_eq!(set.key_ids(), vec!["good".to_string()]);
    }

    #[test]
    fn not_a_jwks_and_no_usable_key_are_errors() {
        assert!(matches!(
            KeySet::parse(b"[]", &[Alg::RS256], None),
            Err(KeySetError::NotAJwks(_))
        ));
        assert_eq!(
            KeySet::parse(br#"{"keys": []}"#, &[Alg::RS256], None).unwrap_err(),
            KeySetError::NoUsableKey
        );
    }

    #[test]
    fn unchanged_keys_are_reused_across_refreshes() {
        let a = TestIssuer::generate("k1").unwrap();
        let first = KeySet::parse(a.jwks_json().as_bytes(), &[Alg::RS256], None).unwrap();
        let second = KeySet::parse(a.jwks_json().as_bytes(), &[Alg::RS256], Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.get("k1").unwrap(),
            second.get("k1").unwrap()
        ));
        let b = TestIssuer::generate("k1").unwrap();
        let rotated = KeySet::parse(b.jwks_json().as_bytes(), &[Alg::RS256], Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(
            first.get("k1").unwrap(),
            rotated.get("k1").unwrap()
        ));
    }

    #[test]
    fn rsa_bit_length() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0]), 9);
        assert_eq!(rsa_bits(&[0, 0]), 0);
    }
}
