//! Runs `policy::authorize` over many distinct (never-seen) tokens, or over
//! one cached token many times, inside one function that callgrind can count
//! on its own: instruction counts are stable on a busy machine where
//! wall-clock benches are not.
//!
//! ```text
//! cargo build --release --example fresh_token_cost
//! valgrind --tool=callgrind --toggle-collect='*measured_run*' \
//!     target/release/examples/fresh_token_cost fresh 200
//! ```
//!
//! Counted modes (divide the total by the count): `fresh` (a cache, every
//! token distinct: parse, verify, insert), `nocache` (parse and verify),
//! `hit` (one token, cached before the measured run), `verify` (the raw RS256
//! verification alone). Under DHAT, `fresh` minus `prepare` (which only makes
//! the tokens) gives the allocations of a fresh token.
//!
//! Wall-clock modes, not for valgrind (which hides SHA-NI and AVX2 from
//! aws-lc): `memory` (resident bytes each cached token adds), `ufo` (the
//! same for the bare store), `sha` (SHA-256 vs ahash of one token: what
//! keying the cache by a digest would add to each hit), `parts` (each step
//! of a fresh token's parse).
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use consent_gateway::config::{
    AuthMode, Binding, ConsentRule, DelegationRule, Issuer, RouteAuth, ScopeRule, SubjectTypes,
};
use consent_gateway::dev_issuer::{DevIssuer, TokenSpec};
use consent_gateway::keys::{Alg, KeySet};
use consent_gateway::metrics::Metrics;
use consent_gateway::policy::{authorize, AuthContext, KeySource, RequestView, TokenCache};

/// The gateway binary's allocator, so that allocation costs are its own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ISSUED_AT: i64 = 1_772_439_400;

struct OneIssuer(Arc<KeySet>);

impl KeySource for OneIssuer {
    fn keys(&self, _issuer: usize) -> Option<Arc<KeySet>> {
        Some(Arc::clone(&self.0))
    }
}

fn issuer_config() -> Issuer {
    Issuer {
        name: "maskinporten-test".into(),
        issuer: "https://test.maskinporten.no/".into(),
        jwks_uri: "http://127.0.0.1/jwk".into(),
        ca_file: None,
        algorithms: vec![Alg::RS256],
        audiences: vec![],
        leeway: Duration::from_secs(30),
        jwks_refresh: Duration::from_secs(300),
        jwks_min_refresh: Duration::from_secs(30),
        jwks_max_stale: Duration::from_secs(86400),
        max_token_lifetime: Some(Duration::from_secs(3600)),
    }
}

fn consent_route() -> RouteAuth {
    RouteAuth {
        mode: AuthMode::Consent,
        issuers: vec![0],
        scopes: ScopeRule {
            all: vec!["demo:inntekt.read".into()],
            any: vec![],
        },
        delegation: DelegationRule::default(),
        consumers: Some(HashSet::from(["0192:310497460".to_string()])),
        consent: Some(ConsentRule {
            resources: vec!["demo-samtykke-inntekt".into()],
            actions: vec!["consent".into()],
            subject: Some(Binding::PathParam("fnr".into())),
            subject_types: SubjectTypes {
                person: true,
                organization: false,
            },
            metadata_required: vec!["inntektsaar".into()],
            metadata_match: vec![("inntektsaar".into(), Binding::PathParam("year".into()))],
        }),
    }
}

fn headers(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("api.example.no"));
    let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("token header");
    headers.insert("authorization", value);
    headers
}

#[inline(never)]
fn measured_run(ctx: &AuthContext<'_>, requests: &[HeaderMap], params: &[(String, String)]) {
    for headers in requests {
        let view = RequestView {
            headers,
            query: None,
            path_params: params,
        };
        let decision = authorize(black_box(ctx), black_box(&view), None);
        assert!(decision.is_ok(), "{:?}", decision.err());
        let _ = black_box(decision);
    }
}

#[inline(never)]
fn measured_run_verify(key: &consent_gateway::keys::VerifyingKey, tokens: &[(String, Vec<u8>)]) {
    for (message, signature) in tokens {
        assert!(key.verify(
            Alg::RS256,
            black_box(message.as_bytes()),
            black_box(signature)
        ));
    }
}

/// Resident set size, from `/proc/self/statm` (Linux).
fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "fresh".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(200);

    let dev = DevIssuer::generate("mp-1").expect("RSA key");
    let keys = KeySet::parse(dev.jwks_json().as_bytes(), &[Alg::RS256], None).expect("JWKS");
    let metrics = Metrics::new();
    let route = consent_route();
    let issuers = vec![issuer_config()];
    let source = OneIssuer(Arc::new(keys));
    let spec = TokenSpec {
        from: Some("17839116535".into()),
        resource: Some("demo-samtykke-inntekt".into()),
        metadata: vec![("inntektsaar".into(), "2025".into())],
        ttl_seconds: 600,
        ..TokenSpec::default()
    };
    let params = vec![
        ("fnr".to_string(), "17839116535".to_string()),
        ("year".to_string(), "2025".to_string()),
    ];
    let cache = TokenCache::new(count.max(1) * 2, &metrics);
    let ctx = |cache: Option<&'static TokenCache>| AuthContext {
        route: Box::leak(Box::new(route.clone())),
        issuers: Box::leak(Box::new(issuers.clone())),
        max_token_bytes: 16384,
        keys: Box::leak(Box::new(OneIssuer(Arc::clone(&source.0)))),
        now: ISSUED_AT as f64 + 1.0,
        cache,
    };
    let cache: &'static TokenCache = Box::leak(Box::new(cache));
    match mode.as_str() {
        "fresh" | "nocache" | "prepare" => {
            let tokens: Vec<HeaderMap> = (0..count)
                .map(|_| headers(&dev.sign(&spec.claims(ISSUED_AT))))
                .collect();
            if mode == "prepare" {
                // The tokens alone: a baseline for allocation counts.
                return;
            }
            eprintln!(
                "token bytes: {}",
                tokens[0]["authorization"].len() - "Bearer ".len()
            );
            let ctx = ctx((mode == "fresh").then_some(cache));
            measured_run(&ctx, &tokens, &params);
        }
        "hit" => {
            let one = headers(&dev.sign(&spec.claims(ISSUED_AT)));
            let ctx = ctx(Some(cache));
            let warm = RequestView {
                headers: &one,
                query: None,
                path_params: &params,
            };
            assert!(authorize(&ctx, &warm, None).is_ok());
            let requests = vec![one; count];
            measured_run(&ctx, &requests, &params);
        }
        "verify" => {
            let key = Arc::clone(source.0.get("mp-1").expect("the key"));
            let tokens: Vec<(String, Vec<u8>)> = (0..count)
                .map(|_| {
                    consent_gateway::dev_issuer::split_signature(&dev.sign(&spec.claims(ISSUED_AT)))
                })
                .collect();
            measured_run_verify(&key, &tokens);
        }
        "memory" => {
            let tokens: Vec<HeaderMap> = (0..count)
                .map(|_| headers(&dev.sign(&spec.claims(ISSUED_AT))))
                .collect();
            let ctx = ctx(Some(cache));
            // One round first, so that the allocator's pools for the
            // transient parse are warm, then measure the second half.
            let (warm, measured) = tokens.split_at(count / 2);
            measured_run(&ctx, warm, &params);
            let before = resident_bytes();
            measured_run(&ctx, measured, &params);
            let after = resident_bytes();
            println!(
                "resident bytes per cached token: {}",
                (after - before) / measured.len().max(1) as i64
            );
        }
        "ufo" => {
            let store = pingora_memory_cache::MemoryCache::<u64, Arc<u64>>::new(count * 2);
            let before = resident_bytes();
            for i in 0..count as u64 {
                store.put(&i, Arc::new(i), Some(Duration::from_secs(600)));
            }
            let after = resident_bytes();
            println!(
                "resident bytes per bare store entry: {}",
                (after - before) / count.max(1) as i64
            );
        }
        "sha" => {
            // Wall-clock (not for valgrind, which hides SHA-NI): what keying
            // the cache by a SHA-256 digest would add to every hit.
            let token = dev.sign(&spec.claims(ISSUED_AT));
            for _ in 0..5 {
                let start = std::time::Instant::now();
                for _ in 0..count {
                    black_box(aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        black_box(token.as_bytes()),
                    ));
                }
                let sha = start.elapsed() / count as u32;
                let start = std::time::Instant::now();
                let state = ahash::RandomState::new();
                for _ in 0..count {
                    black_box(state.hash_one(black_box(token.as_str())));
                }
                let hash = start.elapsed() / count as u32;
                println!("{} bytes: sha256 {sha:?}, ahash {hash:?}", token.len());
            }
        }
        "parts" => {
            // Wall-clock of each step of a fresh token's parse (best of 5).
            use consent_gateway::policy::claims::ClaimSet;
            use consent_gateway::policy::jws;
            let token = dev.sign(&spec.claims(ISSUED_AT));
            let decoded = jws::decode_compact(&token).expect("compact JWS");
            let compact = decoded.parse().expect("strict JSON");
            let time = |name: &str, f: &dyn Fn()| {
                let best = (0..5)
                    .map(|_| {
                        let start = std::time::Instant::now();
                        for _ in 0..count {
                            f();
                        }
                        start.elapsed() / count as u32
                    })
                    .min()
                    .unwrap_or_default();
                println!("{name:>24}: {best:?}");
            };
            time("base64 (3 parts)", &|| {
                black_box(jws::decode_compact(black_box(&token)).is_ok());
            });
            time("strict JSON (header)", &|| {
                black_box(jws::strict_object(black_box(&decoded.header)).is_some());
            });
            time("strict JSON (payload)", &|| {
                black_box(jws::strict_object(black_box(&decoded.payload)).is_some());
            });
            time("serde_json::Value", &|| {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(black_box(&decoded.payload))
                        .is_ok(),
                );
            });
            time("header + claims", &|| {
                black_box(jws::JoseHeader::from_map(black_box(&compact.header)).is_ok());
                black_box(ClaimSet::from_payload(black_box(&compact.payload)));
            });
        }
        "hostile" => {
            // Wall-clock of check 4 and the claims on a 16 KB payload of
            // 1,800 one-digit members (what an unauthenticated client can
            // send), against the genuine token.
            use consent_gateway::policy::claims::ClaimSet;
            use consent_gateway::policy::jws;
            let members: Vec<String> = (0..1800).map(|i| format!("\"k{i}\":{}", i % 10)).collect();
            let wide = format!("{{\"iss\":\"x\",{}}}", members.join(","));
            let genuine = dev.sign(&spec.claims(ISSUED_AT));
            let hostile = dev.sign_raw(r#"{"alg":"RS256","kid":"mp-1"}"#, &wide);
            for (name, token) in [("genuine", &genuine), ("hostile", &hostile)] {
                let start = std::time::Instant::now();
                for _ in 0..count {
                    let decoded = jws::decode_compact(black_box(token)).expect("compact JWS");
                    let compact = decoded.parse().expect("strict JSON");
                    black_box(ClaimSet::from_payload(&compact.payload));
                }
                println!(
                    "{name} ({} bytes): {:?}",
                    token.len(),
                    start.elapsed() / count as u32
                );
                let decoded = jws::decode_compact(token).expect("compact JWS");
                let time = |what: &str, f: &dyn Fn()| {
                    let start = std::time::Instant::now();
                    for _ in 0..count {
                        f();
                    }
                    println!("  {what}: {:?}", start.elapsed() / count as u32);
                };
                time("decode", &|| {
                    black_box(jws::decode_compact(black_box(token)).is_ok());
                });
                time("strict_object", &|| {
                    black_box(jws::strict_object(black_box(&decoded.payload)).is_some());
                });
                time("serde_json::Value", &|| {
                    black_box(
                        serde_json::from_slice::<serde_json::Value>(black_box(&decoded.payload))
                            .is_ok(),
                    );
                });
                let compact = decoded.parse().expect("strict JSON");
                time("claims", &|| {
                    black_box(ClaimSet::from_payload(black_box(&compact.payload)));
                });
            }
        }
        other => panic!("unknown mode {other}"),
    }
}
