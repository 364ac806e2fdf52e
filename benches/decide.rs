//! Criterion benches of the decision core: `policy::decide` (checks 0-21,
//! what every door calls) on a whole configuration, `policy::auth::authorize`
//! (checks 3-21) on the allow path and on several deny paths, with and
//! without the verified-token cache, the raw cost of one RS256
//! verification, and the parse of a fresh token (check 4 and its claims)
//! alone.
//!
//! `cargo bench --bench decide`. Speed is measured here, never asserted.

mod common;

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};

use consent_gateway::config::{
    AuthMode, Binding, ConsentRule, DelegationRule, Issuer, RouteAuth, ScopeRule, SubjectTypes,
};
use consent_gateway::dev_issuer::{DevIssuer, TokenSpec};
use consent_gateway::keys::{Alg, KeySet};
use consent_gateway::metrics::Metrics;
use consent_gateway::policy::claims::ClaimSet;
use consent_gateway::policy::routes::RouteTable;
use consent_gateway::policy::{
    authorize, jws, AuthContext, Authorized, Checking, Denied, Generation, KeySource, RequestFacts,
    RequestView, TokenCache, Verdict,
};

/// The tokens are issued at this instant and checked one second later.
const ISSUED_AT: i64 = 1_772_439_400;
const FNR: &str = "17839116535";
const OTHER_FNR: &str = "05818298781";
const ISSUER: &str = "https://test.maskinporten.no/";

/// One issuer's key set, always available.
struct OneIssuer(Arc<KeySet>);

impl KeySource for OneIssuer {
    fn keys(&self, _issuer: usize) -> Option<Arc<KeySet>> {
        Some(Arc::clone(&self.0))
    }
}

/// Every group here: 30 samples, 0.3 s warm-up, 2 s measured.
fn quick_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    common::group(
        c,
        name,
        30,
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
}

fn issuer_config() -> Issuer {
    Issuer {
        max_token_lifetime: Some(Duration::from_secs(3600)),
        ..Issuer::with_defaults("maskinporten-test", ISSUER, "http://127.0.0.1/jwk")
    }
}

/// The example route of `gateway.yaml`: consent from the person in the path,
/// for the year in the path, a scope, and a consumer access list.
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

fn token_spec() -> TokenSpec {
    TokenSpec {
        from: Some(FNR.into()),
        resource: Some("demo-samtykke-inntekt".into()),
        metadata: vec![("inntektsaar".into(), "2025".into())],
        ttl_seconds: 600,
        ..TokenSpec::default()
    }
}

struct Request {
    headers: HeaderMap,
    path_params: Vec<(String, String)>,
}

impl Request {
    fn new(token: Option<&str>, fnr: &str) -> Request {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("api.example.no"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("token header");
            headers.insert("authorization", value);
        }
        Request {
            headers,
            path_params: vec![("fnr".into(), fnr.into()), ("year".into(), "2025".into())],
        }
    }

    fn view(&self) -> RequestView<'_> {
        RequestView {
            headers: &self.headers,
            query: None,
            path_params: &self.path_params,
            body: None,
        }
    }
}

struct Fixture {
    route: RouteAuth,
    issuers: Vec<Issuer>,
    keys: OneIssuer,
    metrics: Metrics,
}

impl Fixture {
    fn ctx<'a>(&'a self, cache: Option<&'a TokenCache>, now: f64) -> AuthContext<'a> {
        AuthContext {
            route: &self.route,
            issuers: &self.issuers,
            max_token_bytes: 16384,
            keys: &self.keys,
            now,
            cache,
        }
    }
}

fn decide(ctx: &AuthContext<'_>, req: &Request) -> Result<Authorized, Denied> {
    authorize(black_box(ctx), black_box(&req.view()), None)
}

fn bench_authorize(c: &mut Criterion) {
    let dev = DevIssuer::generate("mp-1").expect("RSA key");
    let attacker = DevIssuer::generate("mp-1").expect("RSA key");
    let keys = KeySet::parse(dev.jwks_json().as_bytes(), &[Alg::RS256], None).expect("JWKS");
    let fixture = Fixture {
        route: consent_route(),
        issuers: vec![issuer_config()],
        keys: OneIssuer(Arc::new(keys)),
        metrics: Metrics::new(),
    };
    let now = ISSUED_AT as f64 + 1.0;
    let claims = token_spec().claims(ISSUED_AT);
    let valid = dev.sign(&claims);
    let forged = attacker.sign(&claims);
    let allow = Request::new(Some(&valid), FNR);
    let wrong_subject = Request::new(Some(&valid), OTHER_FNR);
    let missing = Request::new(None, FNR);
    let bad_signature = Request::new(Some(&forged), FNR);
    let expired_now = ISSUED_AT as f64 + 3600.0;

    // Sanity: every case decides what its name says, before it is timed.
    let cache = TokenCache::new(1024, &fixture.metrics);
    let expect = |ctx: &AuthContext<'_>, req: &Request, reason: Option<&str>| {
        let got = decide(ctx, req).map_err(|d| d.reason.code());
        assert_eq!(got.err(), reason, "bench fixture decides as named");
    };
    expect(&fixture.ctx(None, now), &allow, None);
    expect(&fixture.ctx(Some(&cache), now), &allow, None);
    expect(&fixture.ctx(None, now), &missing, Some("missing_token"));
    expect(
        &fixture.ctx(None, now),
        &bad_signature,
        Some("bad_signature"),
    );
    expect(
        &fixture.ctx(None, expired_now),
        &allow,
        Some("token_expired"),
    );
    expect(
        &fixture.ctx(None, now),
        &wrong_subject,
        Some("consent_subject_mismatch"),
    );

    let mut group = quick_group(c, "authorize");
    group.bench_function("allow/no_cache", |b| {
        let ctx = fixture.ctx(None, now);
        b.iter(|| decide(&ctx, &allow))
    });
    group.bench_function("allow/cache_hit", |b| {
        let ctx = fixture.ctx(Some(&cache), now);
        b.iter(|| decide(&ctx, &allow))
    });
    // A pool of distinct tokens four times larger than the cache: nearly
    // every request misses, verifies, and tries to insert.
    let pool: Vec<Request> = (0..256)
        .map(|_| Request::new(Some(&dev.sign(&token_spec().claims(ISSUED_AT))), FNR))
        .collect();
    let small_cache = TokenCache::new(64, &fixture.metrics);
    group.bench_function("allow/cache_miss_distinct_tokens", |b| {
        let ctx = fixture.ctx(Some(&small_cache), now);
        let mut next = 0usize;
        b.iter(|| {
            next = (next + 1) % pool.len();
            decide(&ctx, &pool[next])
        })
    });
    group.bench_function("deny/missing_token", |b| {
        let ctx = fixture.ctx(Some(&cache), now);
        b.iter(|| decide(&ctx, &missing))
    });
    group.bench_function("deny/bad_signature", |b| {
        let ctx = fixture.ctx(Some(&cache), now);
        b.iter(|| decide(&ctx, &bad_signature))
    });
    group.bench_function("deny/expired", |b| {
        let ctx = fixture.ctx(Some(&cache), expired_now);
        b.iter(|| decide(&ctx, &allow))
    });
    group.bench_function("deny/subject_mismatch/no_cache", |b| {
        let ctx = fixture.ctx(None, now);
        b.iter(|| decide(&ctx, &wrong_subject))
    });
    group.bench_function("deny/subject_mismatch/cache_hit", |b| {
        let ctx = fixture.ctx(Some(&cache), now);
        b.iter(|| decide(&ctx, &wrong_subject))
    });
    group.finish();
}

/// One RS256 verification with a key parsed once: the floor under every
/// request that carries a token the gateway has not seen.
fn bench_raw_verify(c: &mut Criterion) {
    let dev = DevIssuer::generate("mp-1").expect("RSA key");
    let keys = KeySet::parse(dev.jwks_json().as_bytes(), &[Alg::RS256], None).expect("JWKS");
    let key = Arc::clone(keys.get("mp-1").expect("the key"));
    let token = dev.sign(&token_spec().claims(ISSUED_AT));
    let (message, signature) = consent_gateway::dev_issuer::split_signature(&token);
    assert!(key.verify(Alg::RS256, message.as_bytes(), &signature));

    let mut group = quick_group(c, "rs256");
    group.bench_function("verify_cold", |b| {
        b.iter(|| {
            key.verify(
                Alg::RS256,
                black_box(message.as_bytes()),
                black_box(&signature),
            )
        })
    });
    group.finish();
}

/// Check 4 and the claims of a fresh token without its signature: split,
/// base64url, strict JSON, typed claims (what a cache miss adds to the
/// RS256 verification).
fn bench_parse(c: &mut Criterion) {
    let dev = DevIssuer::generate("mp-1").expect("RSA key");
    let token = dev.sign(&token_spec().claims(ISSUED_AT));
    let parse = |token: &str| {
        let decoded = jws::decode_compact(token).expect("compact JWS");
        let compact = decoded.parse().expect("strict JSON");
        let header = jws::JoseHeader::from_map(&compact.header).expect("header");
        (header, ClaimSet::from_payload(&compact.payload))
    };
    let (header, claims) = parse(&token);
    assert!(header.kid.is_some() && claims.token.is_ok() && claims.consent.is_ok());

    let mut group = quick_group(c, "token");
    group.bench_function("parse_and_read_claims", |b| {
        b.iter(|| parse(black_box(&token)))
    });
    group.finish();
}

/// The income route of the shipped example, as a whole configuration.
const CONFIG: &str = r#"
server:
  listen: ["127.0.0.1:0"]
issuers:
  - name: maskinporten-test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "http://127.0.0.1:9/jwk"
    algorithms: [RS256]
    max_token_lifetime: 1h
upstreams:
  - name: income-api
    targets: ["127.0.0.1:9"]
routes:
  - name: health
    path: /health
    upstream: income-api
    auth: none
  - name: income
    path: /income/{fnr}/{year}
    methods: [GET]
    upstream: income-api
    auth: consent
    issuers: [maskinporten-test]
    scopes:
      all: ["demo:inntekt.read"]
    consumers:
      allow: ["0192:310497460"]
    consent:
      resources: ["demo-samtykke-inntekt"]
      actions: [consent]
      subject:
        path_param: fnr
        types: [person]
      metadata:
        required: [inntektsaar]
        match:
          inntektsaar: { path_param: year }
"#;

/// `policy::decide` as the proxy calls it: checks 0-2 (well-formed request,
/// route, method) included.
fn bench_decide(c: &mut Criterion) {
    let dev = DevIssuer::generate("mp-1").expect("RSA key");
    let keys = OneIssuer(Arc::new(
        KeySet::parse(dev.jwks_json().as_bytes(), &[Alg::RS256], None).expect("JWKS"),
    ));
    let config = consent_gateway::config::load_str(CONFIG, std::path::Path::new("bench.yaml"))
        .expect("bench config");
    let routes = RouteTable::new(&config.routes).expect("routes");
    let generation = Generation {
        config: &config,
        routes: &routes,
        keys: &keys,
    };
    let metrics = Metrics::new();
    let cache = TokenCache::new(1024, &metrics);
    let now = ISSUED_AT as f64 + 1.0;
    let valid = dev.sign(&token_spec().claims(ISSUED_AT));
    let request = Request::new(Some(&valid), FNR);
    let method = http::Method::GET;
    let facts = |target: &'static str| RequestFacts {
        method: &method,
        version: http::Version::HTTP_11,
        target: target.as_bytes(),
        authority: None,
        headers: &request.headers,
        body: None,
    };
    let income = facts("/income/17839116535/2025");
    let nowhere = facts("/nowhere");
    let checking = |cache: Option<&'static TokenCache>| Checking {
        now,
        cache,
        verify_signature: true,
        may_refetch: true,
    };
    let cache: &'static TokenCache = Box::leak(Box::new(cache));
    let run = |facts: &RequestFacts<'_>, checking: &Checking<'_>| {
        decide_all(black_box(facts), &generation, checking)
    };
    assert!(
        matches!(run(&income, &checking(None)), Verdict::Allow { .. }),
        "bench fixture allows"
    );
    assert!(
        matches!(run(&nowhere, &checking(None)), Verdict::Deny(ref r) if r.reason.code() == "no_route"),
        "bench fixture finds no route"
    );
    let mut group = quick_group(c, "decide");
    group.bench_function("allow/no_cache", |b| {
        let checking = checking(None);
        b.iter(|| run(&income, &checking))
    });
    group.bench_function("allow/cache_hit", |b| {
        let checking = checking(Some(cache));
        b.iter(|| run(&income, &checking))
    });
    group.bench_function("deny/no_route", |b| {
        let checking = checking(Some(cache));
        b.iter(|| run(&nowhere, &checking))
    });
    group.finish();
}

fn decide_all(
    facts: &RequestFacts<'_>,
    generation: &Generation<'_>,
    checking: &Checking<'_>,
) -> Verdict {
    consent_gateway::policy::decide(facts, generation, checking, None)
}

criterion_group!(
    benches,
    bench_decide,
    bench_authorize,
    bench_raw_verify,
    bench_parse
);
criterion_main!(benches);
