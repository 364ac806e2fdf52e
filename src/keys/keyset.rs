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
            // Duplicates are found on the raw `kid`, before anything else is
            // read: two keys of one kid reject the document even when one of
            // them is unusable or unreadable.
            let Some(kid) = value.get("kid").and_then(|k| k.as_str()) else {
                continue;
            };
            if !seen.insert(kid.to_string()) {
                return Err(KeySetError::DuplicateKid(kid.to_string()));
            }
            let kid = kid.to_string();
            // A key we cannot even read is skipped, like any unusable key.
            let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
                continue;
            };
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
    fn a_duplicate_kid_rejects_even_when_one_copy_is_unreadable_or_unusable() {
        let a = TestIssuer::generate("k").unwrap();
        let unreadable = serde_json::json!({"kid": "k", "kty": "RSA", "n": 5});
        let mut encryption = a.jwk();
        encryption["use"] = "enc".into();
        let hmac = serde_json::json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"});
        for other in [unreadable, encryption, hmac] {
            for doc in [
                serde_json::json!({"keys": [a.jwk(), other.clone()]}),
                serde_json::json!({"keys": [other.clone(), a.jwk()]}),
            ] {
                assert_eq!(
                    KeySet::parse(doc.to_string().as_bytes(), &[Alg::RS256], None).unwrap_err(),
                    KeySetError::DuplicateKid("k".into()),
                    "{doc}"
                );
            }
        }
    }

    #[test]
    fn a_key_serves_every_allowed_algorithm_its_jwk_alg_permits() {
        let a = TestIssuer::generate("any").unwrap();
        let mut pinned = a.jwk();
        pinned["kid"] = "pinned".into();
        pinned["alg"] = "RS256".into();
        let mut any = a.jwk();
        any.as_object_mut().unwrap().remove("alg");
        let mut sig = a.jwk();
        sig["kid"] = "sig".into();
        sig["use"] = "sig".into();
        sig.as_object_mut().unwrap().remove("alg");
        let doc = serde_json::json!({"keys": [any, pinned, sig]}).to_string();
        let set = KeySet::parse(doc.as_bytes(), &[Alg::RS256, Alg::PS256], None).unwrap();
        assert_eq!(set.key_ids(), vec!["any", "pinned", "sig"]);
        assert!(set.get("any").unwrap().supports(Alg::PS256));
        assert!(set.get("sig").unwrap().supports(Alg::PS256));
        assert!(!set.get("pinned").unwrap().supports(Alg::PS256));
        assert!(!set.get("any").unwrap().supports(Alg::RS384), "not allowed");

        let token = a
            .sign_with(Alg::PS256, &serde_json::json!({"exp": 1}))
            .unwrap();
        let (message, signature) = split_signature(&token);
        assert!(set
            .get("any")
            .unwrap()
            .verify(Alg::PS256, message.as_bytes(), &signature));
        assert!(!set
            .get("pinned")
            .unwrap()
            .verify(Alg::PS256, message.as_bytes(), &signature));
        // An RSA key is no key at all for an ES256-only issuer.
        assert_eq!(
            KeySet::parse(a.jwks_json().as_bytes(), &[Alg::ES256], None).unwrap_err(),
            KeySetError::NoUsableKey
        );
    }

    fn ec_jwk(kid: &str, crv: &str, point: &[u8]) -> serde_json::Value {
        let half = (point.len() - 1) / 2;
        serde_json::json!({
            "kty": "EC", "kid": kid, "crv": crv,
            "x": URL_SAFE_NO_PAD.encode(&point[1..1 + half]),
            "y": URL_SAFE_NO_PAD.encode(&point[1 + half..]),
        })
    }

    #[test]
    fn ec_keys_verify_on_their_own_curve_only() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point.len(), 65);
        let good = ec_jwk("p256", "P-256", &point);
        let wrong_curve = ec_jwk("wrong-curve", "P-384", &point);
        let mut short = ec_jwk("short", "P-256", &point);
        short["x"] = URL_SAFE_NO_PAD.encode([1u8; 31]).into();
        let mut off_curve = ec_jwk("off-curve", "P-256", &point);
        off_curve["y"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into();
        let doc = serde_json::json!({"keys": [good, wrong_curve, short, off_curve]});
        let set = KeySet::parse(
            doc.to_string().as_bytes(),
            &[Alg::ES256, Alg::ES384, Alg::RS256],
            None,
        )
        .unwrap();
        assert_eq!(set.key_ids(), vec!["p256"]);
        let key = set.get("p256").unwrap();
        assert!(key.supports(Alg::ES256));
        assert!(!key.supports(Alg::ES384));
        assert!(!key.supports(Alg::RS256));
        let message = b"header.payload";
        let signature = pair.sign(&SystemRandom::new(), message).unwrap();
        assert!(key.verify(Alg::ES256, message, signature.as_ref()));
        assert!(!key.verify(Alg::ES256, b"header.other", signature.as_ref()));
        assert!(!key.verify(Alg::ES384, message, signature.as_ref()));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// One JWKS entry: a usable key of the shared RSA issuer, or one of
        /// the ways an entry is unusable.
        #[derive(Debug, Clone, Copy)]
        enum Entry {
            Usable,
            Encryption,
            OtherAlg,
            Weak,
            Hmac,
            Unreadable,
            NoKid,
            NotAnObject,
        }

        fn entry() -> impl Strategy<Value = Entry> {
            prop_oneof![
                Just(Entry::Usable),
                Just(Entry::Encryption),
                Just(Entry::OtherAlg),
                Just(Entry::Weak),
                Just(Entry::Hmac),
                Just(Entry::Unreadable),
                Just(Entry::NoKid),
                Just(Entry::NotAnObject),
            ]
        }

        fn shared() -> &'static TestIssuer {
            static ISSUER: std::sync::OnceLock<TestIssuer> = std::sync::OnceLock::new();
            ISSUER.get_or_init(|| TestIssuer::generate("shared").unwrap())
        }

        fn render(entry: Entry, kid: &str) -> serde_json::Value {
            let mut jwk = shared().jwk();
            jwk["kid"] = kid.into();
            match entry {
                Entry::Usable => {}
                Entry::Encryption => jwk["use"] = "enc".into(),
                Entry::OtherAlg => jwk["alg"] = "RS512".into(),
                Entry::Weak => jwk["n"] = URL_SAFE_NO_PAD.encode([0xc3u8; 128]).into(),
                Entry::Hmac => {
                    return serde_json::json!({"kty": "oct", "kid": kid, "k": "c2VjcmV0"})
                }
                Entry::Unreadable => jwk["e"] = serde_json::json!(["not", "a", "string"]),
                Entry::NoKid => {
                    jwk.as_object_mut().unwrap().remove("kid");
                }
                Entry::NotAnObject => return serde_json::json!(kid),
            }
            jwk
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// Any bytes: an answer, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = KeySet::parse(&bytes, &Alg::ALL, None);
            }

            /// Without a repeated kid, exactly the usable entries are kept;
            /// with one repeated kid (wherever it sits, whatever the two
            /// entries are) the whole document is refused.
            #[test]
            fn usable_keys_are_kept_and_a_repeated_kid_refuses_the_document(
                entries in proptest::collection::vec(entry(), 0..8),
                repeat in proptest::option::of((any::<prop::sample::Index>(), entry(), any::<prop::sample::Index>())),
            ) {
                let mut keys: Vec<serde_json::Value> = entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| render(*e, &format!("k{i}")))
                    .collect();
                let has_kid = |e: Entry| !matches!(e, Entry::NoKid | Entry::NotAnObject);
                let mut duplicate = None;
                let mut lone_copy = None;
                if let Some((which, kind, at)) = repeat {
                    if !entries.is_empty() {
                        let i = which.index(entries.len());
                        let kid = format!("k{i}");
                        keys.insert(at.index(keys.len() + 1), render(kind, &kid));
                        if has_kid(entries[i]) && has_kid(kind) {
                            duplicate = Some(kid);
                        } else if matches!(kind, Entry::Usable) {
                            // Its twin has no kid: the copy stands alone.
                            lone_copy = Some(kid);
                        }
                    }
                }
                let doc = serde_json::json!({ "keys": keys }).to_string();
                let result = KeySet::parse(doc.as_bytes(), &[Alg::RS256], None);
                let mut usable: Vec<String> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| matches!(e, Entry::Usable))
                    .map(|(i, _)| format!("k{i}"))
                    .chain(lone_copy)
                    .collect();
                usable.sort();
                usable.dedup();
                match duplicate {
                    Some(kid) => prop_assert_eq!(result.unwrap_err(), KeySetError::DuplicateKid(kid)),
                    None if usable.is_empty() => prop_assert_eq!(result.unwrap_err(), KeySetError::NoUsableKey),
                    None => prop_assert_eq!(result.unwrap().key_ids(), usable),
                }
            }
        }
    }

    #[test]
    fn rsa_bit_length() {
        assert_eq!(rsa_bits(&[0, 0x80, 0]), 16);
        assert_eq!(rsa_bits(&[0x01, 0]), 9);
        assert_eq!(rsa_bits(&[0, 0]), 0);
    }
}
