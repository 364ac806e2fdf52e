//! SPEC section 6 (keys) through the real binary: a real JWKS server whose
//! document the tests swap, real RSA keys, real upstreams. Key rotation with
//! one refetch, removed keys dropping cached verifications, the unknown-kid
//! storm, `keys_unavailable`, stale keys failing closed, rejected documents,
//! `/readyz`, and the token's own key headers never being fetched.
//!
//! Every wait polls an observable (a metric, `/status`, an answer); no test
//! asserts on timing.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use consent_gateway::dev_issuer::DevIssuer;
use consent_gateway::support::jwks_server::JwksServer;
use serde_json::{json, Value};

/// One issuer, one token-only route (the keys are the subject here, not the
/// consent rules). `{refresh}`, `{min_refresh}` and `{max_stale}` are filled
/// per test.
const ONE_ISSUER: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 2
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
    jwks_refresh: {refresh}
    jwks_min_refresh: {min_refresh}
    jwks_max_stale: {max_stale}
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: keyed
    path: /t
    upstream: echo
    auth: token
    issuers: [test]
"#;

/// A 1024-bit RSA modulus (a real key made with `openssl genrsa 1024`).
const RSA_1024_N: &str = "ygAMVMBYM_uvln5GWrkL1ryuRNvMTiyn78311TJe-gcAByM-nQ-GAMUcGEuG6FgOio_7JMStzUI3g0W2BeXzouT33SZH-qhSW3UfauJDfYcVt_h4NKGTemJF6iKvVbXBx5FBUWh2XAXnMP1xzAhQsCCUyPIRoOJjV8LHQbrSbpc";

const INVALID_TOKEN: &str = r#"Bearer realm="consent-gateway", error="invalid_token""#;

fn config(refresh: &str, min_refresh: &str, max_stale: &str) -> String {
    ONE_ISSUER
        .replace("{refresh}", refresh)
        .replace("{min_refresh}", min_refresh)
        .replace("{max_stale}", max_stale)
}

fn jwks_of(issuers: &[&DevIssuer]) -> String {
    let keys: Vec<Value> = issuers.iter().map(|i| i.jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// A valid token for the `keyed` route, signed by `issuer` (its `kid`).
fn token_from(world: &World, issuer: &DevIssuer) -> String {
    issuer.sign(&world.spec().claims(World::now()))
}

/// A token signed by `signer` with an arbitrary JOSE header.
fn token_with_header(world: &World, signer: &DevIssuer, header: Value) -> String {
    let payload = world.spec().claims(World::now()).to_string();
    signer.sign_raw(&header.to_string(), &payload)
}

fn get_t(gw: &Gateway, token: &str) -> Response {
    gw.get("/t", Some(token), &[])
}

/// The value of a series, 0 when it is not (yet) exported.
fn metric_or_zero(gw: &Gateway, series: &str) -> f64 {
    gw.metric(series).unwrap_or(0.0)
}

fn refreshes(gw: &Gateway, issuer: &str, outcome: &str) -> f64 {
    metric_or_zero(
        gw,
        &format!("consent_gateway_jwks_refresh_total{{issuer=\"{issuer}\",outcome=\"{outcome}\"}}"),
    )
}

fn cache_lookups(gw: &Gateway, result: &str) -> f64 {
    metric_or_zero(
        gw,
        &format!("consent_gateway_token_cache_requests_total{{result=\"{result}\"}}"),
    )
}

fn issuer_status(gw: &Gateway, issuer: &str) -> Value {
    gw.admin_get("/status").json()["issuers"][issuer].clone()
}

fn key_ids(gw: &Gateway, issuer: &str) -> Vec<String> {
    issuer_status(gw, issuer)["key_ids"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until the proxy listener answers at all (for gateways started with
/// `World::spawn`, which never become ready on their own).
fn wait_listening(gw: &Gateway) {
    eventually(30, "the proxy listener answers", || {
        raw(
            gw.addr,
            "GET /__probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .is_ok()
    });
}

/// Asserts a 401 `unknown_key` denial with the invalid_token challenge.
fn assert_unknown_key(response: &Response, what: &str) {
    assert_eq!(response.status, 401, "{what}: {}", response.body);
    assert_eq!(response.reason(), "unknown_key", "{what}");
    assert_eq!(
        response.header("www-authenticate"),
        Some(INVALID_TOKEN),
        "{what}"
    );
}

/// Asserts the full `keys_unavailable` contract (SPEC sections 4 and 12,
/// `Reason::KeysUnavailable` in src/error.rs): 503 problem+json with
/// `Retry-After`, no `WWW-Authenticate`, and a body whose `request_id` is the
/// response's `X-Request-Id`.
fn assert_keys_unavailable(response: &Response, what: &str) {
    assert_eq!(response.status, 503, "{what}: {}", response.body);
    assert_eq!(response.reason(), "keys_unavailable", "{what}");
    assert_eq!(response.header("retry-after"), Some("5"), "{what}");
    assert_eq!(response.header("www-authenticate"), None, "{what}");
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let body = response.json();
    assert_eq!(
        body["type"], "urn:consent-gateway:keys_unavailable",
        "{what}"
    );
    assert_eq!(body["status"], 503, "{what}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{what}"
    );
    let request_id = response.header("x-request-id").expect("X-Request-Id");
    assert_eq!(body["request_id"], request_id, "{what}");
}

#[test]
fn a_rotated_key_is_accepted_after_exactly_one_refetch() {
    let world = World::new();
    // No periodic refresh during the test: only the unknown kid can fetch.
    let gw = world.start(&config("1h", "30s", "24h"));
    let old_token = token_from(&world, &world.issuer);
    assert_eq!(get_t(&gw, &old_token).status, 200);

    let hits = world.jwks.hits();
    let successes = refreshes(&gw, "test", "success");
    assert!(successes >= 1.0, "the start-up fetch is counted");
    let rotated = DevIssuer::generate("rotated-key").expect("rsa key");
    world.jwks.set_body(jwks_of(&[&world.issuer, &rotated]));
    world.echo.clear();

    let new_token = token_from(&world, &rotated);
    let first = get_t(&gw, &new_token);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(world.jwks.hits(), hits + 1, "exactly one refetch");
    assert_eq!(refreshes(&gw, "test", "success"), successes + 1.0);
    assert_eq!(refreshes(&gw, "test", "failure"), 0.0);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-consent-consumer"), Some(CONSUMER));

    // The new key is now in force: no further fetch, for either key.
    assert_eq!(get_t(&gw, &new_token).status, 200);
    assert_eq!(get_t(&gw, &token_from(&world, &rotated)).status, 200);
    assert_eq!(get_t(&gw, &old_token).status, 200);
    assert_eq!(world.jwks.hits(), hits + 1);
    assert_eq!(
        key_ids(&gw, "test"),
        vec!["rotated-key".to_string(), "test-key".to_string()]
    );
    assert_eq!(
        metric_or_zero(&gw, "consent_gateway_jwks_keys{issuer=\"test\"}"),
        2.0
    );
    let last_success = metric_or_zero(
        &gw,
        "consent_gateway_jwks_last_success_timestamp_seconds{issuer=\"test\"}",
    );
    assert!(
        (last_success - World::now() as f64).abs() < 3600.0,
        "a wall-clock time: {last_success}"
    );
    assert_eq!(
        issuer_status(&gw, "test")["last_refresh_outcome"],
        "success"
    );
}

#[test]
fn concurrent_requests_for_a_rotated_key_all_pass_with_one_fetch() {
    let world = World::new();
    let gw = world.start(&config("1h", "1h", "24h"));
    let rotated = DevIssuer::generate("rotated-key").expect("rsa key");
    world.jwks.set_body(jwks_of(&[&world.issuer, &rotated]));
    // A slow answer keeps the refetch in flight while the requests arrive
    // (it widens the overlap; nothing below depends on how long it takes).
    world.jwks.set_delay(std::time::Duration::from_millis(300));
    let hits = world.jwks.hits();

    let tokens: Vec<String> = (0..20).map(|_| token_from(&world, &rotated)).collect();
    let start = Arc::new(Barrier::new(tokens.len()));
    let addr = gw.addr;
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    start.wait();
                    raw(
                        addr,
                        &format!(
                            "GET /t HTTP/1.1\r\nHost: api.example.no\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                        ),
                    )
                    .expect("request")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.status, 200, "request {i}: {}", answer.body);
    }
    assert_eq!(world.jwks.hits(), hits + 1, "one fetch for all of them");
    assert_eq!(world.echo.seen().len(), answers.len());
}

#[test]
fn a_removed_key_drops_what_was_verified_with_it() {
    let world = World::new();
    let gw = world.start(&config("1s", "30s", "24h"));
    let token = token_from(&world, &world.issuer);

    // Verified once, then served from the cache.
    assert_eq!(get_t(&gw, &token).status, 200);
    let hits = cache_lookups(&gw, "hit");
    assert_eq!(get_t(&gw, &token).status, 200);
    assert_eq!(cache_lookups(&gw, "hit"), hits + 1.0, "second use is a hit");

    // The issuer drops the key: the periodic refresh picks that up.
    let successor = DevIssuer::generate("successor").expect("rsa key");
    world.jwks.set_body(jwks_of(&[&successor]));
    eventually(30, "the refresh drops the old key", || {
        key_ids(&gw, "test") == vec!["successor".to_string()]
    });
    world.echo.clear();
    let hits = cache_lookups(&gw, "hit");
    let denied = get_t(&gw, &token);
    assert_unknown_key(&denied, "a cached token whose key left the set");
    assert_eq!(cache_lookups(&gw, "hit"), hits, "no hit for a dropped key");
    assert!(
        world.echo.seen().is_empty(),
        "the upstream received nothing"
    );

    // The same key published again is a new key object: the token is
    // verified anew (a miss), then cached again.
    world.jwks.set_body(jwks_of(&[&world.issuer, &successor]));
    eventually(30, "the refresh brings the key back", || {
        key_ids(&gw, "test").contains(&"test-key".to_string())
    });
    let (hits, misses) = (cache_lookups(&gw, "hit"), cache_lookups(&gw, "miss"));
    assert_eq!(get_t(&gw, &token).status, 200);
    assert_eq!(cache_lookups(&gw, "miss"), misses + 1.0);
    assert_eq!(cache_lookups(&gw, "hit"), hits);
    assert_eq!(get_t(&gw, &token).status, 200);
    assert_eq!(cache_lookups(&gw, "hit"), hits + 1.0);
}

#[test]
fn a_kid_reused_for_new_key_material_does_not_honour_cached_verifications() {
    let world = World::new();
    let gw = world.start(&config("1s", "30s", "24h"));
    let token = token_from(&world, &world.issuer);
    assert_eq!(get_t(&gw, &token).status, 200);
    assert_eq!(get_t(&gw, &token).status, 200);

    // Same kid, other key: the cached verification must not count.
    let impostor = DevIssuer::generate("test-key").expect("rsa key");
    let impostor_token = token_from(&world, &impostor);
    world.jwks.set_body(impostor.jwks_json());
    eventually(30, "the refresh puts the new key material in force", || {
        get_t(&gw, &impostor_token).status == 200
    });
    world.echo.clear();
    let hits = cache_lookups(&gw, "hit");
    let denied = get_t(&gw, &token);
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert_eq!(denied.reason(), "bad_signature");
    assert_eq!(cache_lookups(&gw, "hit"), hits);
    assert!(world.echo.seen().is_empty());
}

#[test]
fn an_unknown_kid_storm_fetches_at_most_once_per_min_refresh() {
    let world = World::new();
    let gw = world.start(&config("1h", "1h", "24h"));
    world.jwks.set_delay(std::time::Duration::from_millis(300));
    let hits = world.jwks.hits();
    let successes = refreshes(&gw, "test", "success");
    world.echo.clear();

    let tokens: Vec<String> = (0..50)
        .map(|i| {
            token_with_header(
                &world,
                &world.issuer,
                json!({"alg": "RS256", "kid": format!("unknown-{i}")}),
            )
        })
        .collect();
    let start = Arc::new(Barrier::new(tokens.len()));
    let addr = gw.addr;
    let answers: Vec<Response> = std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    start.wait();
                    raw(
                        addr,
                        &format!(
                            "GET /t HTTP/1.1\r\nHost: api.example.no\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                        ),
                    )
                    .expect("request")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (i, answer) in answers.iter().enumerate() {
        assert_unknown_key(answer, &format!("storm request {i}"));
    }
    // The first unknown kid may fetch (none did before); every other one
    // either waited for that fetch or fell inside the window.
    assert_eq!(world.jwks.hits(), hits + 1, "one fetch for the whole storm");
    assert_eq!(refreshes(&gw, "test", "success"), successes + 1.0);

    // Another unknown kid inside the window: denied without a fetch.
    let late = token_with_header(
        &world,
        &world.issuer,
        json!({"alg": "RS256", "kid": "late-unknown"}),
    );
    assert_unknown_key(&get_t(&gw, &late), "inside the window");
    assert_eq!(world.jwks.hits(), hits + 1);
    assert!(
        world.echo.seen().is_empty(),
        "the upstream received nothing"
    );
    assert_eq!(
        metric_or_zero(
            &gw,
            "consent_gateway_requests_total{decision=\"deny\",reason=\"unknown_key\",route=\"keyed\"}"
        ),
        51.0
    );
}

#[test]
fn an_unreachable_jwks_answers_503_keys_unavailable() {
    let world = World::new();
    let closed = free_addr();
    let template = config("5m", "30s", "24h").replace("{jwks}", &format!("http://{closed}/jwks"));
    let gw = world.spawn(&template, &[]);
    wait_listening(&gw);

    let token = token_from(&world, &world.issuer);
    assert_keys_unavailable(&get_t(&gw, &token), "no keys ever fetched");
    // Check 7 comes before check 8: an unknown kid is 503 too, not 401.
    let unknown = token_with_header(
        &world,
        &world.issuer,
        json!({"alg": "RS256", "kid": "nobody"}),
    );
    assert_keys_unavailable(&get_t(&gw, &unknown), "unknown kid without keys");
    // A request id the client sent is echoed in the problem body.
    let tagged = gw.get("/t", Some(&token), &[("X-Request-Id", "req-keys-1")]);
    assert_keys_unavailable(&tagged, "with a request id");
    assert_eq!(tagged.json()["request_id"], "req-keys-1");
    assert!(
        world.echo.seen().is_empty(),
        "the upstream received nothing"
    );

    // Checks before 7 still decide first.
    let foreign = world
        .issuer
        .sign(&json!({"iss": "https://other.example/", "exp": World::now() + 60}));
    let answer = get_t(&gw, &foreign);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.reason(), "issuer_not_allowed");

    let readyz = gw.admin_get("/readyz");
    assert_eq!(readyz.status, 503);
    assert_eq!(readyz.json()["issuers_without_keys"], json!(["test"]));
    eventually(30, "failed fetches are counted", || {
        refreshes(&gw, "test", "failure") >= 1.0
    });
    let status = issuer_status(&gw, "test");
    assert_eq!(status["last_refresh_outcome"], "failure");
    assert_eq!(status["key_ids"], json!([]));
    assert_eq!(
        metric_or_zero(
            &gw,
            "consent_gateway_requests_total{decision=\"deny\",reason=\"keys_unavailable\",route=\"keyed\"}"
        ),
        3.0
    );
    assert_eq!(
        metric_or_zero(&gw, "consent_gateway_jwks_keys{issuer=\"test\"}"),
        0.0
    );
}

#[test]
fn stale_keys_fail_closed_and_recover() {
    let world = World::new();
    let gw = world.start(&config("1s", "30s", "2s"));
    let token = token_from(&world, &world.issuer);
    assert_eq!(get_t(&gw, &token).status, 200);
    assert_eq!(get_t(&gw, &token).status, 200, "cached as well");

    world.jwks.set_failing(true);
    let failures = refreshes(&gw, "test", "failure");
    // Until max_stale passes the last good keys serve; then fail closed,
    // even for a token whose verification is cached.
    let mut last = get_t(&gw, &token);
    eventually(30, "stale keys stop serving", || {
        last = get_t(&gw, &token);
        assert!(
            last.status == 200 || last.status == 503,
            "only the old keys or none: {} {}",
            last.status,
            last.body
        );
        last.status == 503
    });
    assert_keys_unavailable(&last, "stale beyond jwks_max_stale");
    assert!(refreshes(&gw, "test", "failure") > failures);
    assert_eq!(gw.admin_get("/readyz").status, 503);
    assert_eq!(
        metric_or_zero(&gw, "consent_gateway_jwks_keys{issuer=\"test\"}"),
        0.0
    );
    let status = issuer_status(&gw, "test");
    assert_eq!(status["key_ids"], json!([]));
    assert_eq!(status["last_refresh_outcome"], "failure");

    world.echo.clear();
    world.jwks.set_failing(false);
    eventually(30, "keys come back once the server answers", || {
        get_t(&gw, &token).status == 200
    });
    assert_eq!(gw.admin_get("/readyz").status, 200);
    assert_eq!(
        issuer_status(&gw, "test")["last_refresh_outcome"],
        "success"
    );
    assert!(!world.echo.seen().is_empty());
}

#[test]
fn a_jwks_with_a_duplicate_kid_is_rejected_whole() {
    let world = World::new();
    let gw = world.start(&config("1s", "30s", "24h"));
    let token = token_from(&world, &world.issuer);
    assert_eq!(get_t(&gw, &token).status, 200);

    // A new key, published twice under one kid (different material), beside
    // the good key: the whole document is refused.
    let first = DevIssuer::generate("twice").expect("rsa key");
    let second = DevIssuer::generate("twice").expect("rsa key");
    world
        .jwks
        .set_body(jwks_of(&[&world.issuer, &first, &second]));
    let failures = refreshes(&gw, "test", "failure");
    eventually(30, "the duplicate-kid document is refused", || {
        refreshes(&gw, "test", "failure") > failures
    });
    let status = issuer_status(&gw, "test");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("two keys with kid \"twice\"")),
        "{status}"
    );
    assert_eq!(status["key_ids"], json!(["test-key"]));

    // The old set keeps serving; nothing of the refused set is in force.
    assert_eq!(get_t(&gw, &token).status, 200);
    assert_eq!(get_t(&gw, &token_from(&world, &world.issuer)).status, 200);
    assert_unknown_key(
        &get_t(&gw, &token_from(&world, &first)),
        "a kid only the refused document had",
    );
    assert_eq!(gw.admin_get("/readyz").status, 200);
    assert_eq!(
        metric_or_zero(&gw, "consent_gateway_jwks_keys{issuer=\"test\"}"),
        1.0
    );
}

#[test]
fn an_rsa_1024_key_is_not_usable() {
    let world = World::new();
    let weak = json!({"kty": "RSA", "kid": "weak", "use": "sig", "alg": "RS256", "n": RSA_1024_N, "e": "AQAB"});
    world
        .jwks
        .set_body(json!({ "keys": [weak.clone()] }).to_string());
    let gw = world.spawn(&config("1s", "30s", "24h"), &[]);
    wait_listening(&gw);

    // Its signature is irrelevant: no key at all is in force (check 7).
    let weak_token = token_with_header(
        &world,
        &world.issuer,
        json!({"alg": "RS256", "kid": "weak"}),
    );
    assert_keys_unavailable(&get_t(&gw, &weak_token), "only a 1024-bit key");
    eventually(30, "the fetch is refused", || {
        issuer_status(&gw, "test")["last_refresh_outcome"] == "failure"
    });
    let status = issuer_status(&gw, "test");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no key usable")),
        "{status}"
    );
    assert_eq!(refreshes(&gw, "test", "success"), 0.0);
    assert_eq!(gw.admin_get("/readyz").status, 503);

    // Beside a good key, the weak one is skipped, the good one used.
    world
        .jwks
        .set_body(json!({ "keys": [weak, world.issuer.jwk()] }).to_string());
    eventually(30, "the good key arrives", || {
        gw.admin_get("/readyz").status == 200
    });
    assert_eq!(key_ids(&gw, "test"), vec!["test-key".to_string()]);
    assert_eq!(
        metric_or_zero(&gw, "consent_gateway_jwks_keys{issuer=\"test\"}"),
        1.0
    );
    assert_unknown_key(&get_t(&gw, &weak_token), "the 1024-bit key's kid");
    assert_eq!(get_t(&gw, &token_from(&world, &world.issuer)).status, 200);
}

#[test]
fn readyz_waits_for_every_issuer_a_route_uses_and_no_other() {
    let world = World::new();
    world.jwks.set_failing(true);
    let closed = free_addr();
    let other_jwks = JwksServer::start(world.issuer.jwks_json());
    let template = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
issuers:
  - name: used
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
  - name: also-used
    issuer: "https://also.example/"
    jwks_uri: "{other_jwks}"
  - name: unused
    issuer: "https://unused.example/"
    jwks_uri: "http://{closed}/jwks"
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: first
    path: /t
    upstream: echo
    auth: token
    issuers: [used]
  - name: second
    path: /u
    upstream: echo
    auth: token
    issuers: [also-used, used]
  - name: open
    path: /open
    upstream: echo
    auth: none
"#
    .replace("{other_jwks}", &other_jwks.url())
    .replace("{closed}", &closed.to_string());
    let gw = world.spawn(&template, &[]);

    // Not ready while `used` has no keys; `also-used` has them, `unused` is
    // not named and does not count.
    eventually(
        30,
        "/readyz names exactly the issuer in use without keys",
        || {
            raw(
                gw.admin,
                "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
            )
            .is_ok_and(|r| r.status == 503 && r.json()["issuers_without_keys"] == json!(["used"]))
        },
    );
    eventually(30, "also-used has its keys", || {
        issuer_status(&gw, "also-used")["key_ids"] == json!(["test-key"])
    });
    assert_eq!(gw.admin_get("/readyz").status, 503);
    // auth: none routes serve meanwhile.
    wait_listening(&gw);
    assert_eq!(gw.get("/open", None, &[]).status, 200);

    world.jwks.set_failing(false);
    eventually(30, "ready once every issuer in use has keys", || {
        gw.admin_get("/readyz").status == 200
    });
    let readyz = gw.admin_get("/readyz");
    assert_eq!(readyz.json()["ready"], true);
    // Still without keys: the unused issuer never blocked readiness.
    let unused = issuer_status(&gw, "unused");
    assert_eq!(unused["key_ids"], json!([]));
    assert_eq!(unused["last_refresh_outcome"], "failure");
    assert_eq!(get_t(&gw, &token_from(&world, &world.issuer)).status, 200);
}

#[test]
fn the_tokens_own_key_headers_never_cause_a_fetch() {
    let world = World::new();
    let gw = world.start(&config("1h", "30s", "24h"));
    let attacker = DevIssuer::generate("attacker").expect("rsa key");
    // Serves the attacker's key: any fetch of it would be a hit here.
    let trap = JwksServer::start(attacker.jwks_json());
    let trap_url = trap.url();
    let fake_cert = base64_standard(b"not really a certificate, never read");
    world.echo.clear();

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "jku to the attacker's JWKS",
            json!({"alg": "RS256", "kid": "attacker", "jku": trap_url}),
            "unknown_key",
        ),
        (
            "x5u to the attacker's server",
            json!({"alg": "RS256", "kid": "attacker", "x5u": trap_url}),
            "unknown_key",
        ),
        (
            "embedded jwk of the attacker",
            json!({"alg": "RS256", "kid": "attacker", "jwk": attacker.jwk()}),
            "unknown_key",
        ),
        (
            "x5c chain",
            json!({"alg": "RS256", "kid": "attacker", "x5c": [fake_cert]}),
            "unknown_key",
        ),
        (
            "jku with the issuer's kid",
            json!({"alg": "RS256", "kid": "test-key", "jku": trap_url}),
            "bad_signature",
        ),
        (
            "embedded jwk with the issuer's kid",
            json!({"alg": "RS256", "kid": "test-key", "jwk": attacker.jwk()}),
            "bad_signature",
        ),
        (
            "x5u with the issuer's kid",
            json!({"alg": "RS256", "kid": "test-key", "x5u": trap_url}),
            "bad_signature",
        ),
    ];
    for (what, header, reason) in cases {
        let token = token_with_header(&world, &attacker, header);
        let answer = get_t(&gw, &token);
        assert_eq!(answer.status, 401, "{what}: {}", answer.body);
        assert_eq!(answer.reason(), reason, "{what}");
        assert_eq!(
            answer.header("www-authenticate"),
            Some(INVALID_TOKEN),
            "{what}"
        );
    }
    assert_eq!(
        trap.hits(),
        0,
        "the token's own key references are never fetched"
    );
    assert!(
        world.echo.seen().is_empty(),
        "the upstream received nothing"
    );
    // The same key headers on a genuine token change nothing either.
    let genuine = token_with_header(
        &world,
        &world.issuer,
        json!({"alg": "RS256", "kid": "test-key", "jku": trap_url, "x5u": trap_url}),
    );
    assert_eq!(get_t(&gw, &genuine).status, 200);
    assert_eq!(trap.hits(), 0);
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// SPEC section 13, "Connections" (issue 12 item 9): an issuer without
/// usable keys is retried with backoff (0.5 s doubling to 10 s), not at the
/// next periodic refresh: with `jwks_refresh: 1h`, keys that come back are in
/// force within seconds.
#[test]
fn an_issuer_without_keys_is_retried_with_backoff_not_at_the_next_refresh() {
    let world = World::new();
    world.jwks.set_failing(true);
    let gw = world.spawn(&config("1h", "30s", "2h"), &[]);
    let token = token_from(&world, &world.issuer);
    let mut last = None;
    eventually(30, "the gateway answers while the JWKS is down", || {
        last = raw(
            gw.addr,
            &format!(
                "GET /t HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
            ),
        )
        .ok();
        last.is_some()
    });
    assert_keys_unavailable(&last.expect("a response"), "no keys yet");
    eventually(30, "two failed refreshes", || {
        metric_or_zero(
            &gw,
            "consent_gateway_jwks_refresh_total{issuer=\"test\",outcome=\"failure\"}",
        ) >= 2.0
    });
    assert_eq!(gw.admin_get("/readyz").status, 503);
    assert!(world.echo.seen().is_empty(), "nothing reached the upstream");

    world.jwks.set_failing(false);
    // The backoff is at most 10 s: far sooner than the hour of jwks_refresh.
    eventually(
        25,
        "keys in force well before the next periodic refresh",
        || get_t(&gw, &token).status == 200,
    );
    assert_eq!(gw.admin_get("/readyz").status, 200);
}

/// SPEC section 13 ("Logs and traces": `jwks_file` issuers): the keys come
/// from a JWKS document on disk, read at start and again on an unknown
/// `kid` (rate limited by `jwks_min_refresh`), so a rotated file is in force
/// without a restart; a missing file is a config error at its field path.
#[test]
fn a_jwks_file_issuer_reads_its_keys_from_disk_and_follows_rotation() {
    let world = World::new();
    let rotated = DevIssuer::generate("rotated-on-disk").expect("rsa key");
    let template = ONE_ISSUER
        .replace("jwks_uri: \"{jwks}\"", "jwks_file: keys/jwks.json")
        .replace("{refresh}", "1h")
        .replace("{min_refresh}", "1s")
        .replace("{max_stale}", "2h");
    let gw = world.start_with(&template, &[("keys/jwks.json", &jwks_of(&[&world.issuer]))]);
    assert_eq!(get_t(&gw, &token_from(&world, &world.issuer)).status, 200);
    let new_token = token_from(&world, &rotated);
    assert_eq!(get_t(&gw, &new_token).reason(), "unknown_key");

    let file = gw.dir.path().join("keys/jwks.json");
    let tmp = gw.dir.path().join("keys/.jwks.json.tmp");
    std::fs::write(&tmp, jwks_of(&[&rotated])).expect("write");
    std::fs::rename(&tmp, &file).expect("rotate");
    eventually(15, "the rotated key is read from disk", || {
        get_t(&gw, &new_token).status == 200
    });
    assert_eq!(
        get_t(&gw, &token_from(&world, &world.issuer)).reason(),
        "unknown_key",
        "the old key left with the file"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, world.render(&template, free_addr(), free_addr())).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("issuers[0].jwks_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
