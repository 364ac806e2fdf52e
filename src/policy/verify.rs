//! Verification (Envoy `jwt_authn`'s authenticator): checks 4-9, from the
//! strict compact JWS through issuer, algorithm and key to the signature,
//! with the verified-token cache and the refused-signature memory behind
//! this one call.

use std::sync::Arc;

use crate::config::Issuer;
use crate::error::Reason;
use crate::keys::Alg;
use crate::policy::jws::{self, DecodedJws};
use crate::policy::token::ParsedToken;
use crate::policy::token_cache::CachedToken;
use crate::policy::trace::Trace;
use crate::policy::{AuthContext, Denied};

/// Whether checks 7-9 run (`Skip` only for `explain --no-verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signature {
    Verify,
    Skip,
}

fn deny(reason: Reason) -> Denied {
    Denied::new(reason)
}

/// Checks 4-9 on the bearer token's bytes: the parsed token and the issuer
/// whose key signed it, or the denial of the first failing check (an
/// unknown kid with `refetch` set).
pub(crate) fn verify_token<'c>(
    ctx: &AuthContext<'c>,
    token: &[u8],
    signature: Signature,
    trace: &mut Trace<'_>,
) -> Result<(Arc<ParsedToken>, &'c Issuer), Denied> {
    // 4: size, then strict compact JWS (or a cached verification of these bytes).
    let malformed = |trace: &mut Trace<'_>, why: String| {
        trace.record(4, "compact_jws", false, || why);
        deny(Reason::MalformedToken)
    };
    if token.len() > ctx.max_token_bytes {
        let why = format!(
            "{} bytes > max_token_bytes {}",
            token.len(),
            ctx.max_token_bytes
        );
        return Err(malformed(trace, why));
    }
    let Ok(token) = std::str::from_utf8(token) else {
        return Err(malformed(trace, "not UTF-8".into()));
    };
    let cache = ctx.cache.filter(|_| signature == Signature::Verify);
    // One hash of the token bytes for every cache look-up below.
    let cache_key = cache.map(|c| (c, c.key(token)));
    let cache = cache_key.as_ref();
    let cached: Option<Arc<CachedToken>> = cache.and_then(|(c, key)| c.lookup(key, ctx.now));
    // A fresh token keeps its signature for check 9; a cached one has none.
    let (parsed, fresh_signature): (Arc<ParsedToken>, Option<DecodedJws>) = match cached.as_ref() {
        Some(entry) => (Arc::clone(&entry.parsed), None),
        None => match ParsedToken::parse_signed(token) {
            Ok((parsed, signed)) => (Arc::new(parsed), Some(signed)),
            Err(e) => return Err(malformed(trace, e.to_string())),
        },
    };
    trace.record(4, "compact_jws", true, || {
        format!("{} bytes, three base64url parts, strict JSON", token.len())
    });

    // 5: kid, no crit.
    let Some(kid) = parsed.header.kid.as_deref() else {
        trace.record(5, "jose_header", false, || "no kid".into());
        return Err(deny(Reason::UnknownKey));
    };
    if parsed.header.has_crit {
        trace.record(5, "jose_header", false, || "crit is present".into());
        return Err(deny(Reason::MalformedToken));
    }
    trace.record(5, "jose_header", true, || format!("kid {kid:?}, no crit"));

    // 6: the issuer is one of the route's, then the algorithm is the issuer's.
    let claims = &parsed.claims;
    let found = claims.iss.as_deref().and_then(|iss| {
        ctx.route.issuers.iter().find_map(|&index| {
            ctx.issuers
                .get(index)
                .filter(|issuer| issuer.issuer == iss)
                .map(|issuer| (index, issuer))
        })
    });
    let Some((issuer_index, issuer)) = found else {
        trace.record(6, "issuer_and_algorithm", false, || {
            format!("iss {:?} is not one of the route's issuers", claims.iss)
        });
        return Err(deny(Reason::IssuerNotAllowed));
    };
    let alg = parsed
        .header
        .alg
        .as_deref()
        .and_then(|a| a.parse::<Alg>().ok())
        .filter(|a| issuer.algorithms.contains(a));
    let Some(alg) = alg else {
        trace.record(6, "issuer_and_algorithm", false, || {
            format!(
                "alg {:?} is not in {}'s algorithms",
                parsed.header.alg, issuer.name
            )
        });
        return Err(deny(Reason::AlgorithmNotAllowed));
    };
    trace.record(6, "issuer_and_algorithm", true, || {
        format!("issuer {} ({}), alg {alg}", issuer.name, issuer.issuer)
    });

    // 7-9: keys and signature.
    if signature == Signature::Verify {
        let Some(keys) = ctx.keys.keys(issuer_index) else {
            trace.record(7, "issuer_keys", false, || {
                format!("issuer {} has no usable keys", issuer.name)
            });
            return Err(deny(Reason::KeysUnavailable));
        };
        trace.record(7, "issuer_keys", true, || format!("{} key(s)", keys.len()));
        // SPEC section 6 counts only usable keys: a key of another type
        // than `alg` needs (an RSA kid on an ES256 token) is no key for it.
        let Some(key) = keys.get(kid).filter(|key| key.supports(alg)) else {
            if let Some((cache, token_key)) = cache.filter(|_| cached.is_some()) {
                cache.forget(token_key);
            }
            trace.record(8, "key_id", false, || match keys.get(kid) {
                Some(_) => format!(
                    "kid {kid:?} of {} has no key usable with {alg}",
                    issuer.name
                ),
                None => format!("kid {kid:?} is not in {}'s key set", issuer.name),
            });
            let mut denied = deny(Reason::UnknownKey);
            denied.refetch = Some((issuer_index, kid.to_string()));
            return Err(denied);
        };
        trace.record(8, "key_id", true, || format!("kid {kid:?} found"));
        let cache_hit = cached.as_ref().is_some_and(|entry| entry.verified_by(key));
        if let Some((cache, _)) = cache {
            cache.count(cache_hit);
        }
        if cache_hit {
            trace.record(9, "signature", true, || {
                format!("{alg} verified earlier with this very key (cache)")
            });
        } else if cached.is_none()
            && cache
                .and_then(|(c, token_key)| c.lookup_rejected(token_key, ctx.now))
                .is_some_and(|entry| entry.rejected_by(key))
        {
            // These very bytes failed check 9 before with this same key
            // object (they were parsed and passed checks 5-8 again first).
            trace.record(9, "signature", false, || {
                format!("{alg} signature did not verify with this very key earlier (cache)")
            });
            return Err(deny(Reason::BadSignature));
        } else {
            // A cached token whose kid now names another key object is
            // verified again: its signature is decoded anew (these bytes
            // parsed whole before, so this cannot fail; if it did, the
            // empty signature would not verify).
            let signed =
                fresh_signature.unwrap_or_else(|| jws::decode_compact(token).unwrap_or_default());
            let message = token
                .as_bytes()
                .get(..signed.signing_input_len)
                .unwrap_or_default();
            if !key.verify(alg, message, &signed.signature) {
                if let Some((cache, token_key)) = cache {
                    if cached.is_some() {
                        cache.forget(token_key);
                    }
                    cache.reject(token_key, Arc::clone(key), ctx.now);
                }
                trace.record(9, "signature", false, || {
                    format!("{alg} signature does not verify with kid {kid:?}")
                });
                return Err(deny(Reason::BadSignature));
            }
            trace.record(9, "signature", true, || format!("{alg} signature verifies"));
            if let (Some((cache, token_key)), Ok(token_claims)) = (cache, claims.token.as_ref()) {
                cache.insert(
                    token_key,
                    Arc::clone(&parsed),
                    Arc::clone(key),
                    token_claims.exp,
                    ctx.now,
                );
            }
        }
    } else {
        for (number, name) in [(7, "issuer_keys"), (8, "key_id"), (9, "signature")] {
            trace.record(number, name, true, || "skipped (--no-verify)".into());
        }
    }
    Ok((parsed, issuer))
}
