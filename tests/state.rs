//! Shared state (SPEC section 13, issue 16): one-time consents and rate
//! limits, on a real `redis-server` shared by two gateway processes, and on
//! the memory backend of one process.

mod common;

use common::redis_ha::{cli, Cluster, Pki, SentinelSet, TlsRedis, TlsSentinelSet, MASTER_NAME};
use common::{eventually, free_addr, Gateway, RedisServer, World};

/// One-time consent routes (alone, and rate-limited: one store call where
/// the store combines them), rate-limited token routes, and a dead
/// upstream; `{state}` is replaced by the `state:` block.
const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 2
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["{upstream}"]
    connect_timeout: 1s
    read_timeout: 2s
  - name: dead
    targets: ["{dead}"]
    connect_timeout: 1s
{state}
routes:
  - name: once
    path: /once/{fnr}
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      one_time: true
      subject:
        path_param: fnr
  - name: once-dead
    path: /dead/{fnr}
    upstream: dead
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      one_time: true
      subject:
        path_param: fnr
  - name: limited
    path: /limited
    upstream: echo
    auth: token
    issuers: [test]
    rate_limit: { per: consumer, requests: {requests}, period: 1h }
  - name: strict
    path: /strict
    upstream: echo
    auth: token
    issuers: [test]
    rate_limit: { requests: 1000, period: 1s, on_store_error: deny }
  - name: once-limited
    path: /once-limited/{fnr}
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      one_time: true
      subject:
        path_param: fnr
    rate_limit: { requests: 1000, period: 1h }
  - name: once-limited-dead
    path: /once-limited-dead/{fnr}
    upstream: dead
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      one_time: true
      subject:
        path_param: fnr
    rate_limit: { requests: 1000, period: 1h }
  - name: once-slow
    path: /once-slow/{fnr}
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      one_time: true
      subject:
        path_param: fnr
    rate_limit: { requests: 1, period: 2s }
"#;

fn config(state: &str, requests: u32) -> String {
    CONFIG
        .replace("{state}", state)
        .replace("{requests}", &requests.to_string())
        .replace("{dead}", &free_addr().to_string())
}

fn redis_state(redis: &RedisServer) -> String {
    format!(
        "state:\n  backend: redis\n  redis: {{ url: \"{}\", key_prefix: \"t:\", timeout: 200ms }}",
        redis.url()
    )
}

const ONCE_PATH: &str = "/once/17839116535";
/// One-time and 1000 an hour: one store call (`rate_limit_use_once`).
const LIMITED_ONCE: &str = "/once-limited/17839116535";
/// One-time and one request per 2 s.
const SLOW_ONCE: &str = "/once-slow/17839116535";

fn reasons(responses: &[common::Response]) -> Vec<(u16, String)> {
    let mut all: Vec<(u16, String)> = responses.iter().map(|r| (r.status, r.reason())).collect();
    all.sort();
    all
}

/// Two gateways (replicas) on one `state:` block, 5 requests per window on
/// the rate-limited routes.
fn two_replicas(world: &World, state: &str) -> (Gateway, Gateway) {
    let text = config(state, 5);
    (world.start(&text), world.start(&text))
}

/// Sends `n` GETs of `path` with `token`, spread over `gateways`, all at once.
fn burst(gateways: &[&Gateway], n: usize, path: &str, token: &str) -> Vec<common::Response> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let gw = gateways[i % gateways.len()];
                s.spawn(move || gw.get(path, Some(token), &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_one_time_consent_is_used_once_across_two_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let (a, b) = two_replicas(&world, &redis_state(&redis));
    let token = world.valid_token();
    let responses = burst(&[&a, &b], 50, ONCE_PATH, &token);
    let got = reasons(&responses);
    let ok = got.iter().filter(|(s, _)| *s == 200).count();
    let used = got
        .iter()
        .filter(|(s, r)| *s == 403 && r == "consent_already_used")
        .count();
    assert_eq!((ok, used), (1, 49), "{got:?}");
    assert_eq!(world.echo.seen().len(), 1, "the upstream saw exactly one");
    // Another consent (a new token, a new `id`) is its own.
    assert_eq!(
        a.get(ONCE_PATH, Some(&world.valid_token()), &[]).status,
        200
    );
    let metrics = a.admin_get("/metrics").body;
    assert!(
        metrics.contains("consent_gateway_state_requests_total{op=\"use_once\",outcome=\"ok\"}"),
        "{metrics}"
    );
    let status = a.status();
    assert_eq!(status["state"]["backend"], "redis");
    assert_eq!(status["state"]["reachable"], true);
    // Two consents used: two keys under the prefix, each kept until
    // `validTo` (30 days on) + the 30 s leeway, never longer.
    let keys = redis.command(&["KEYS", "t:once:*"]);
    assert!(keys.starts_with("*2\r\n"), "{keys}");
    let key = keys.lines().find(|l| l.starts_with("t:once:")).unwrap();
    let pttl: i64 = redis
        .command(&["PTTL", key])
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap();
    let month_ms = 30 * 24 * 3600 * 1000;
    assert!(
        pttl > month_ms - 600_000 && pttl <= month_ms + 30_000,
        "{pttl}"
    );
}

/// A one-time, rate-limited route over `a` and `b`: 50 concurrent uses of
/// one consent are one 200 and 49 `consent_already_used`, all with the
/// `RateLimit` headers, and the consent is used for the route without a
/// limit too (the same key). A request the rate refuses leaves its consent
/// unused: it goes through once the rate allows, then never again.
/// Whether the one-time, rate-limited route made one combined store call
/// (`rate_limit_use_once`) or the two separate ones (`rate_limit` among
/// them), from a gateway's metrics.
fn assert_store_calls(metrics: &str, combined: bool) {
    for (op, want) in [("rate_limit_use_once", combined), ("rate_limit", !combined)] {
        let seen = common::series_value(
            metrics,
            "consent_gateway_state_requests_total",
            &[("op", op), ("outcome", "ok")],
        );
        assert_eq!(seen.is_some_and(|n| n > 0.0), want, "{op}: {metrics}");
    }
}

fn assert_rate_limited_once(world: &World, a: &Gateway, b: &Gateway) {
    let bursts = (0..3).find(|_| burst_round(world, a, b)).is_some();
    assert!(bursts, "three bursts in a row hit a store hiccup");

    // One request per 2 s: a consent the rate refuses stays unused. A
    // store hiccup (503: a time-out on a loaded machine may come after the
    // `SET` ran, and such a consent stays used) makes the round
    // inconclusive; it is run again with fresh consents.
    let rounds = (0..3).find(|_| rate_refusal_round(world, a, b)).is_some();
    assert!(rounds, "three rounds in a row hit a store hiccup");
}

/// The first answer of `gw` to `path` with `token` that is not 503
/// `state_unavailable` (a store hiccup, or a gateway that has not found a
/// slot's new owner yet), within 30 s.
fn past_a_hiccup(gw: &Gateway, path: &str, token: &str) -> common::Response {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = gw.get(path, Some(token), &[]);
        if (r.status, r.reason()) != (503, "state_unavailable".into()) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still state_unavailable"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// One round of `assert_rate_limited_once`'s burst on `LIMITED_ONCE`: never
/// more than one 200, the others `consent_already_used` or, on a store
/// hiccup of a loaded machine, `state_unavailable`; `false` when no use
/// went through and a hiccup may have been the one (the round is then
/// inconclusive).
fn burst_round(world: &World, a: &Gateway, b: &Gateway) -> bool {
    world.echo.clear();
    let token = world.valid_token();
    let responses = burst(&[a, b], 50, LIMITED_ONCE, &token);
    let got = reasons(&responses);
    let count = |status: u16, reason: &str| {
        got.iter()
            .filter(|(s, r)| *s == status && r == reason)
            .count()
    };
    let ok = got.iter().filter(|(s, _)| *s == 200).count();
    let used = count(403, "consent_already_used");
    let hiccups = count(503, "state_unavailable");
    assert_eq!(ok + used + hiccups, 50, "{got:?}");
    assert!(ok <= 1, "used more than once: {got:?}");
    assert_eq!(
        world.echo.seen().len(),
        ok,
        "the upstream saw exactly those"
    );
    for r in responses.iter().filter(|r| r.status != 503) {
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"consumer\";q=1000;w=3600")
        );
    }
    if ok == 0 {
        assert!(hiccups > 0, "nobody used a fresh consent: {got:?}");
        return false;
    }
    let r = past_a_hiccup(b, ONCE_PATH, &token);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    true
}

/// One round of `assert_rate_limited_once`'s rate refusal on `SLOW_ONCE`:
/// `false` when a store call failed before the outcome was known.
fn rate_refusal_round(world: &World, a: &Gateway, b: &Gateway) -> bool {
    let hiccup = |r: &common::Response| (r.status, r.reason()) == (503, "state_unavailable".into());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let wait = || {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(std::time::Duration::from_millis(25));
    };
    world.echo.clear();
    let (first, refused) = (world.valid_token(), world.valid_token());
    // The first one goes through (once an earlier round's use has left
    // room in the bucket)...
    loop {
        let r = a.get(SLOW_ONCE, Some(&first), &[]);
        match r.status {
            200 => break,
            429 => wait(),
            _ if hiccup(&r) => return false,
            other => panic!("{other} {}", r.reason()),
        }
    }
    // ...the next, at once, is refused by the rate...
    let r = b.get(SLOW_ONCE, Some(&refused), &[]);
    if hiccup(&r) {
        return false;
    }
    assert_eq!((r.status, r.reason()), (429, "rate_limited".into()));
    assert!(r.header("retry-after").is_some());
    // ...and not used: once the rate allows, it goes through, once.
    loop {
        let r = a.get(SLOW_ONCE, Some(&refused), &[]);
        match r.status {
            200 => break,
            429 => wait(),
            _ if hiccup(&r) => return false,
            other => panic!("a rate refusal used the consent: {other} {}", r.reason()),
        }
    }
    loop {
        let r = b.get(SLOW_ONCE, Some(&refused), &[]);
        match r.status {
            403 => {
                assert_eq!(r.reason(), "consent_already_used");
                break;
            }
            429 => wait(),
            _ if hiccup(&r) => wait(),
            other => panic!("used twice: {other}"),
        }
    }
    assert_eq!(world.echo.seen().len(), 2, "refusals never went upstream");
    true
}

#[test]
fn a_rate_limited_one_time_route_is_one_store_call_and_a_rate_refusal_keeps_the_consent() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let (a, b) = two_replicas(&world, &redis_state(&redis));
    assert_rate_limited_once(&world, &a, &b);
    // One call per request, none of the separate ones.
    for gw in [&a, &b] {
        let metrics = gw.admin_get("/metrics").body;
        let value = |op: &str| {
            common::series_value(
                &metrics,
                "consent_gateway_state_requests_total",
                &[("op", op), ("outcome", "ok")],
            )
            .unwrap_or(0.0)
        };
        assert!(value("rate_limit_use_once") >= 25.0, "{metrics}");
        assert_eq!(value("rate_limit"), 0.0, "no separate rate call");
    }
    // The combined call stores the keys the separate calls store.
    // Three consents used (more if a round was run again).
    let keys = redis.command(&["KEYS", "t:once:*"]);
    let used: usize = keys
        .lines()
        .next()
        .and_then(|l| l.trim_start_matches('*').parse().ok())
        .unwrap_or(0);
    assert!(used >= 3, "{keys}");
    let rate = redis.command(&["KEYS", "t:rl:*"]);
    assert!(rate.starts_with("*2\r\n"), "{rate}");
    for line in keys
        .lines()
        .chain(rate.lines())
        .filter(|l| l.starts_with("t:"))
    {
        let hash = line
            .trim_start_matches("t:once:")
            .trim_start_matches("t:rl:");
        assert!(
            hash.len() == 32 && hash.bytes().all(|c| c.is_ascii_hexdigit()),
            "{line}"
        );
    }
}

#[test]
fn a_rate_limit_holds_across_two_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let (a, b) = two_replicas(&world, &redis_state(&redis));
    let token = world.valid_token();
    let responses = burst(&[&a, &b], 20, "/limited", &token);
    let ok = responses.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 5, "{:?}", reasons(&responses));
    let refused: Vec<_> = responses.iter().filter(|r| r.status != 200).collect();
    assert_eq!(refused.len(), 15);
    for r in refused {
        assert_eq!((r.status, r.reason()), (429, "rate_limited".to_string()));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{retry}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"consumer\";q=5;w=3600")
        );
        assert!(r
            .header("ratelimit")
            .unwrap()
            .starts_with("\"consumer\";r=0;t="));
    }
    // Another consumer has its own allowance.
    let mut spec = world.spec();
    spec.consumer = "0192:302685991".into();
    let other = world.token(&spec.claims(World::now()));
    let r = b.get("/limited", Some(&other), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit"), Some("\"consumer\";r=4;t=720"));
}

#[test]
fn a_dead_store_fails_one_time_routes_closed_and_recovers_without_a_restart() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let gw = world.start(&config(&redis_state(&redis), 1000));
    assert_eq!(
        gw.get(ONCE_PATH, Some(&world.valid_token()), &[]).status,
        200
    );
    world.echo.clear();

    redis.stop();
    for _ in 0..5 {
        let r = gw.get(ONCE_PATH, Some(&world.valid_token()), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        assert!(r.header("retry-after").is_some());
        // `on_store_error: deny`.
        let r = gw.get("/strict", Some(&world.valid_token()), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        // One-time and rate-limited (`allow` on a store error): one-time
        // wins, closed.
        let r = gw.get(LIMITED_ONCE, Some(&world.valid_token()), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
    }
    assert!(world.echo.seen().is_empty(), "nothing went upstream");
    // `on_store_error: allow` (the default).
    let r = gw.get("/limited", Some(&world.valid_token()), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(world.echo.seen().len(), 1);
    eventually(10, "/readyz says the store is unreachable", || {
        let r = gw.admin_get("/readyz");
        r.status == 503 && r.json()["state"]["reachable"] == false
    });
    assert_eq!(gw.status()["state"]["reachable"], false);
    let metrics = gw.admin_get("/metrics").body;
    assert!(metrics.contains("consent_gateway_state_up 0"), "{metrics}");

    redis.restart();
    eventually(15, "the one-time route works again", || {
        gw.get(ONCE_PATH, Some(&world.valid_token()), &[]).status == 200
    });
    eventually(10, "/readyz is 200 again", || {
        gw.admin_get("/readyz").status == 200
    });
    // A consent used while the store was back is used.
    let token = world.valid_token();
    assert_eq!(gw.get(ONCE_PATH, Some(&token), &[]).status, 200);
    let r = gw.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
}

#[test]
fn an_upstream_failure_before_any_byte_gives_the_consent_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let gw = world.start(&config(&redis_state(&redis), 5));
    let token = world.valid_token();
    for _ in 0..3 {
        let r = gw.get("/dead/17839116535", Some(&token), &[]);
        assert_eq!((r.status, r.reason()), (502, "upstream_unavailable".into()));
    }
    // Still unused: it goes through once on the live route, then not again.
    assert_eq!(gw.get(ONCE_PATH, Some(&token), &[]).status, 200);
    let r = gw.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!(r.reason(), "consent_already_used");
    // The same through the combined call of a rate-limited route.
    let token = world.valid_token();
    for _ in 0..3 {
        let r = gw.get("/once-limited-dead/17839116535", Some(&token), &[]);
        assert_eq!((r.status, r.reason()), (502, "upstream_unavailable".into()));
    }
    assert_eq!(gw.get(LIMITED_ONCE, Some(&token), &[]).status, 200);
    let r = gw.get(LIMITED_ONCE, Some(&token), &[]);
    assert_eq!(r.reason(), "consent_already_used");
}

#[test]
fn the_memory_backend_keeps_one_time_consents_and_limits_in_one_process() {
    let world = World::new();
    let gw = world.start(&config("", 3));
    assert_eq!(gw.status()["state"]["backend"], "memory");
    let token = world.valid_token();
    assert_eq!(gw.get(ONCE_PATH, Some(&token), &[]).status, 200);
    let r = gw.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    assert!(r.header("www-authenticate").is_some());
    // Given back on an upstream failure, in memory too.
    let fresh = world.valid_token();
    assert_eq!(gw.get("/dead/17839116535", Some(&fresh), &[]).status, 502);
    assert_eq!(gw.get(ONCE_PATH, Some(&fresh), &[]).status, 200);

    let limited: Vec<u16> = (0..5)
        .map(|_| gw.get("/limited", Some(&token), &[]).status)
        .collect();
    assert_eq!(limited, [200, 200, 200, 429, 429]);
    let r = gw.get("/limited", Some(&token), &[]);
    assert_eq!(r.reason(), "rate_limited");
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"consumer\";q=3;w=3600")
    );

    // A reload raises the limit: the consumer may go on, the store is kept.
    gw.rewrite(&world, &config("", 10));
    eventually(10, "the reload applies", || gw.generation() == 2);
    assert_eq!(gw.get("/limited", Some(&token), &[]).status, 200);
    assert_eq!(
        gw.get(ONCE_PATH, Some(&token), &[]).reason(),
        "consent_already_used"
    );
}

#[test]
fn the_memory_backend_combines_the_rate_check_and_the_one_time_use() {
    let world = World::new();
    let gw = world.start(&config("", 3));
    assert_rate_limited_once(&world, &gw, &gw);
    let metrics = gw.admin_get("/metrics").body;
    let combined = common::series_value(
        &metrics,
        "consent_gateway_state_requests_total",
        &[("op", "rate_limit_use_once"), ("outcome", "ok")],
    );
    assert!(combined.is_some_and(|n| n >= 50.0), "{metrics}");
}

/// The test config with every placeholder filled, for `config::load_str`.
fn offline(state: &str) -> String {
    config(state, 5)
        .replace("{jwks}", "http://127.0.0.1:1/jwks")
        .replace("{listen}", "127.0.0.1:0")
        .replace("{admin}", "127.0.0.1:0")
        .replace("{upstream}", "127.0.0.1:1")
}

fn load_error(text: &str) -> String {
    match consent_gateway::config::load_str(text, std::path::Path::new("/tmp/g.yaml")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn state_config_errors_are_reported() {
    let path = std::path::Path::new("/tmp/g.yaml");
    let good = consent_gateway::config::load_str(&offline(""), path).expect("the baseline loads");
    assert_eq!(good.state, consent_gateway::config::StateBackend::Memory);
    assert!(good.routes[0].one_time && !good.routes[2].one_time);
    let redis = "state:\n  backend: redis\n  redis: { url: \"redis://x:6379/0\" }";
    let loaded = consent_gateway::config::load_str(&offline(redis), path).expect("redis loads");
    match loaded.state {
        consent_gateway::config::StateBackend::Redis(r) => {
            assert_eq!(r.key_prefix, "cgw:");
            assert_eq!(r.timeout, std::time::Duration::from_millis(50));
        }
        other => panic!("{other:?}"),
    }
    let cases: &[(&str, &str)] = &[
        ("state:\n  backend: redis", "state.redis"),
        (
            "state:\n  backend: redis\n  redis: { url: \"http://x:6379\" }",
            "state.redis.url",
        ),
        (
            "state:\n  backend: redis\n  redis: { url: \"redis://x:6379\", timeout: 0s }",
            "state.redis.timeout",
        ),
        (
            "state:\n  backend: memory\n  redis: { url: \"redis://x:6379\" }",
            "state.redis",
        ),
        ("state:\n  backend: etcd", "backend"),
    ];
    for (state, path) in cases {
        let err = load_error(&offline(state));
        assert!(err.contains(path), "{state}: {err}");
    }
    let route_cases: &[(&str, &str)] = &[
        ("requests: 0, period: 1s", "routes[2].rate_limit.requests"),
        ("requests: 5, period: 0s", "routes[2].rate_limit.period"),
        (
            "requests: 5, period: 1s, per: consumer_and_subject",
            "routes[2].rate_limit.per",
        ),
        (
            "requests: 5, period: 1s, on_store_error: maybe",
            "on_store_error",
        ),
    ];
    for (limit, path) in route_cases {
        let text = offline("").replace(
            "{ per: consumer, requests: 5, period: 1h }",
            &format!("{{ {limit} }}"),
        );
        let err = load_error(&text);
        assert!(err.contains(path), "{limit}: {err}");
    }
    // `rate_limit` on `auth: none` cannot count per consumer.
    let text = offline("").replace(
        "    auth: token\n    issuers: [test]\n    rate_limit: { per",
        "    auth: none\n    rate_limit: { per",
    );
    let err = load_error(&text);
    assert!(err.contains("routes[2].rate_limit"), "{err}");
}

/// `report_only` and `per: consumer_and_subject`, memory backend.
const SHADOW_CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: shadow
    path: /shadow/{fnr}
    upstream: echo
    issuers: [test]
    mode: report_only
    consent:
      resources: ["demo-samtykke-inntekt"]
      one_time: true
      subject:
        path_param: fnr
  - name: per-subject
    path: /subject/{fnr}
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
    rate_limit: { per: consumer_and_subject, requests: 1, period: 1h }
"#;

#[test]
fn report_only_routes_shadow_deny_and_limits_can_count_per_subject() {
    let world = World::new();
    let gw = world.start(SHADOW_CONFIG);
    let token = world.valid_token();
    assert_eq!(gw.get("/shadow/17839116535", Some(&token), &[]).status, 200);
    // Used, but `report_only`: forwarded, counted as a shadow denial.
    assert_eq!(gw.get("/shadow/17839116535", Some(&token), &[]).status, 200);
    assert_eq!(world.echo.seen().len(), 2);
    eventually(5, "the shadow denial is counted", || {
        gw.series(
            "consent_gateway_requests_total",
            &[
                ("route", "shadow"),
                ("decision", "shadow_deny"),
                ("reason", "consent_already_used"),
            ],
        ) == Some(1.0)
    });

    // One request per consumer and subject: another subject is its own.
    let mut spec = world.spec();
    spec.from = Some(common::OTHER_PERSON.into());
    let other = world.token(&spec.claims(World::now()));
    assert_eq!(
        gw.get("/subject/17839116535", Some(&token), &[]).status,
        200
    );
    let r = gw.get("/subject/17839116535", Some(&token), &[]);
    assert_eq!((r.status, r.reason()), (429, "rate_limited".into()));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some("\"consumer_and_subject\";q=1;w=3600")
    );
    let path = format!("/subject/{}", common::OTHER_PERSON);
    assert_eq!(gw.get(&path, Some(&other), &[]).status, 200);
}

#[test]
fn a_reload_moves_the_state_from_memory_to_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let gw = world.start(&config("", 5));
    let token = world.valid_token();
    assert_eq!(gw.get(ONCE_PATH, Some(&token), &[]).status, 200);
    gw.rewrite(&world, &config(&redis_state(&redis), 5));
    eventually(10, "the reload applies", || gw.generation() == 2);
    assert_eq!(gw.status()["state"]["backend"], "redis");
    // A new store: what memory held is not in Redis, and now Redis counts.
    assert_eq!(gw.get(ONCE_PATH, Some(&token), &[]).status, 200);
    assert!(redis.command(&["KEYS", "t:once:*"]).starts_with("*1\r\n"));
    let r = gw.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!(r.reason(), "consent_already_used");
}

#[test]
fn a_hung_store_is_cut_off_by_the_timeout() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let world = World::new();
    let gw = world.start(&config(&redis_state(&redis), 1000));
    assert_eq!(
        gw.get(ONCE_PATH, Some(&world.valid_token()), &[]).status,
        200
    );
    world.echo.clear();
    // Connected, but no answer: every call ends at `timeout` (200ms here).
    redis.signal("STOP");
    for _ in 0..4 {
        let r = gw.get(ONCE_PATH, Some(&world.valid_token()), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        assert_eq!(
            gw.get("/limited", Some(&world.valid_token()), &[]).status,
            200
        );
    }
    assert_eq!(
        world.echo.seen().len(),
        4,
        "only the rate-limited route went upstream"
    );
    let metrics = gw.admin_get("/metrics").body;
    let timeouts = common::series_value(
        &metrics,
        "consent_gateway_state_requests_total",
        &[("op", "use_once"), ("outcome", "timeout")],
    );
    assert!(timeouts.is_some_and(|n| n >= 1.0), "{metrics}");
    redis.signal("CONT");
    eventually(15, "the one-time route works again", || {
        gw.get(ONCE_PATH, Some(&world.valid_token()), &[]).status == 200
    });
}

/// The `state:` block of a Redis store given as `servers` (the lines under
/// `redis:` that say where the servers are).
fn redis_block(servers: &str) -> String {
    format!(
        "state:\n  backend: redis\n  redis:\n{servers}    key_prefix: \"t:\"\n    timeout: 200ms"
    )
}

fn sentinel_state(set: &SentinelSet) -> String {
    redis_block(&format!(
        "    sentinel:\n      master_name: {MASTER_NAME}\n      urls: [\"{}\"]\n",
        set.sentinel_url()
    ))
}

/// 50 concurrent uses of one consent over `a` and `b`: one 200, 49
/// `consent_already_used`; a limit of 5 holds over both.
fn assert_shared(world: &World, a: &Gateway, b: &Gateway) -> String {
    world.echo.clear();
    let token = world.valid_token();
    let got = reasons(&burst(&[a, b], 50, ONCE_PATH, &token));
    let ok = got.iter().filter(|(s, _)| *s == 200).count();
    let used = got
        .iter()
        .filter(|(s, r)| *s == 403 && r == "consent_already_used")
        .count();
    assert_eq!((ok, used), (1, 49), "{got:?}");
    assert_eq!(world.echo.seen().len(), 1, "the upstream saw exactly one");
    let limited = burst(&[a, b], 20, "/limited", &world.valid_token());
    let statuses: Vec<u16> = limited.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(world.echo.seen().len(), 6, "refusals never went upstream");
    token
}

#[test]
fn sentinel_shares_the_state_and_fails_closed_through_a_failover() {
    let Some(mut set) = SentinelSet::start() else {
        return;
    };
    let world = World::new();
    let (a, b) = two_replicas(&world, &sentinel_state(&set));
    let used = assert_shared(&world, &a, &b);
    assert_rate_limited_once(&world, &a, &b);
    assert_eq!(a.status()["state"]["mode"], "sentinel");
    let old = set.master.port;
    assert_eq!(set.master_port(), Some(old));

    // The used consent reached the replica; then the master dies.
    set.wait_replicated();
    world.echo.clear();
    set.master.stop();
    // Until the sentinel names a new master, one-time routes fail closed
    // (and `on_store_error: deny` limits); nothing goes upstream.
    let mut closed = 0;
    loop {
        let r = a.get(ONCE_PATH, Some(&world.valid_token()), &[]);
        let strict = b.get("/strict", Some(&world.valid_token()), &[]);
        if set.master_port() != Some(old) {
            break;
        }
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        assert_eq!(strict.status, 503);
        closed += 1;
        assert!(world.echo.seen().is_empty(), "nothing went upstream");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(closed < 2000, "the sentinel never promoted the replica");
    }
    assert!(closed >= 1, "the gap was seen at least once");
    assert_eq!(set.master_port(), Some(set.replica.port));

    // The new master serves both replicas without a restart; what the old
    // one held is still there.
    for gw in [&a, &b] {
        eventually(20, "the one-time route works on the new master", || {
            gw.get(ONCE_PATH, Some(&world.valid_token()), &[]).status == 200
        });
        let r = gw.get(ONCE_PATH, Some(&used), &[]);
        assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    }
    let fresh = world.valid_token();
    assert_eq!(a.get(ONCE_PATH, Some(&fresh), &[]).status, 200);
    assert_eq!(
        b.get(ONCE_PATH, Some(&fresh), &[]).reason(),
        "consent_already_used"
    );
    let keys = set.replica.command(&["KEYS", "t:once:*"]);
    assert!(keys.starts_with("*") && !keys.starts_with("*0"), "{keys}");
}

#[test]
fn a_graceful_sentinel_failover_moves_writes_to_the_new_master() {
    let Some(set) = SentinelSet::start() else {
        return;
    };
    let world = World::new();
    let gw = world.start(&config(&sentinel_state(&set), 5));
    let used = world.valid_token();
    assert_eq!(gw.get(ONCE_PATH, Some(&used), &[]).status, 200);
    set.wait_replicated();
    // The old master stays up as a read-only replica: a kept connection
    // to it must not be trusted for writes.
    eventually(20, "SENTINEL FAILOVER is accepted", || {
        cli(set.sentinel_port, &["SENTINEL", "FAILOVER", MASTER_NAME]).contains("OK")
    });
    eventually(30, "the replica is the master", || {
        set.master_port() == Some(set.replica.port)
            && cli(set.master.port, &["ROLE"]).starts_with("slave")
    });
    eventually(20, "one-time uses go to the new master", || {
        gw.get(ONCE_PATH, Some(&world.valid_token()), &[]).status == 200
    });
    let r = gw.get(ONCE_PATH, Some(&used), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    // Written on the new master (the old one is a replica now).
    let fresh = world.valid_token();
    assert_eq!(gw.get(ONCE_PATH, Some(&fresh), &[]).status, 200);
    let keys = cli(set.replica.port, &["KEYS", "t:once:*"]);
    assert!(keys.lines().count() >= 3, "{keys}");
}

#[test]
fn a_cluster_of_three_masters_shares_the_state_and_follows_a_moved_slot() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let world = World::new();
    let state = cluster_state(&cluster);
    let (a, b) = (
        world.start(&config(&state, 5)),
        world.start(&config(&state, 5)),
    );
    let used = assert_shared(&world, &a, &b);
    assert_eq!(b.status()["state"]["mode"], "cluster");
    let keys = cluster.keys("t:once:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(cluster.keys("t:rl:*").len(), 1);

    // The slot of the used consent moves to another node: the gateways
    // follow `MOVED` and the consent stays used.
    let from = cluster.owner(&keys[0]);
    let to = cluster.move_slot_of(&keys[0]);
    assert_ne!(from, to);
    assert_eq!(cluster.owner(&keys[0]), to);
    for gw in [&a, &b] {
        let r = gw.get(ONCE_PATH, Some(&used), &[]);
        assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    }
    // New consents land on whichever node owns their slot.
    let tokens: Vec<String> = (0..6).map(|_| world.valid_token()).collect();
    for token in &tokens {
        assert_eq!(a.get(ONCE_PATH, Some(token), &[]).status, 200);
        assert_eq!(
            b.get(ONCE_PATH, Some(token), &[]).reason(),
            "consent_already_used"
        );
    }
    assert_eq!(cluster.keys("t:once:*").len(), 7);
    // A one-time, rate-limited route: two calls here (the two keys are in
    // different slots), the same outcome.
    assert_rate_limited_once(&world, &a, &b);
    let metrics = a.admin_get("/metrics").body;
    assert_store_calls(&metrics, false);
}

fn cluster_state(cluster: &Cluster) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    redis_block(&format!(
        "    cluster:\n      urls: [{}]\n",
        urls.join(", ")
    ))
}

/// A fresh consent whose one-time key the node at `port` serves: the
/// token and the key.
fn consent_served_by(world: &World, cluster: &Cluster, port: u16) -> (String, String) {
    for _ in 0..10_000 {
        let claims = world.spec().claims(World::now());
        let id = claims["authorization_details"][0]["id"]
            .as_str()
            .expect("a consent id");
        let key = consent_gateway::state::once_key("t:", "https://test.maskinporten.no/", id);
        if cluster.serves(port, &key) {
            return (world.token(&claims), key);
        }
    }
    panic!("no consent key on the node at {port}");
}

#[test]
fn a_killed_cluster_master_fails_closed_until_its_replica_is_promoted() {
    let Some(mut cluster) = Cluster::start_with_replicas() else {
        return;
    };
    let world = World::new();
    let (a, b) = two_replicas(&world, &cluster_state(&cluster));
    let master = cluster.masters()[0];
    let replica = cluster.replica_of(master).expect("the master's replica");

    // A consent used on that master, and on its replica before the kill.
    let (used, used_key) = consent_served_by(&world, &cluster, master);
    assert_eq!(a.get(ONCE_PATH, Some(&used), &[]).status, 200);
    assert_eq!(cluster.owner(&used_key), master);
    cluster.wait_replicated(master, replica);
    // Unused consents on its slots: one tried through the gap, one per
    // gateway afterwards.
    let (pending, pending_key) = consent_served_by(&world, &cluster, master);
    let after: Vec<(String, String)> = (0..2)
        .map(|_| consent_served_by(&world, &cluster, master))
        .collect();
    world.echo.clear();

    cluster.kill(master);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut closed, mut passed) = (0, 0);
    loop {
        let gw = [&a, &b][closed % 2];
        let r = gw.get(ONCE_PATH, Some(&pending), &[]);
        let promoted = cli(replica, &["ROLE"]).starts_with("master");
        if r.status == 200 {
            passed += 1;
        }
        if promoted {
            // This request may have raced the promotion: 503 or the one use.
            assert!(r.status == 503 || r.status == 200, "{}", r.status);
            break;
        }
        // Sent and answered before the replica took over: closed.
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        assert!(world.echo.seen().is_empty(), "nothing went upstream");
        closed += 1;
        assert!(
            std::time::Instant::now() < deadline,
            "the replica was never promoted"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(closed >= 1, "the gap was seen at least once");

    // Without a restart: the consent tried through the gap goes through
    // once, on the promoted replica.
    eventually(30, "the gap's consent goes through", || {
        if passed > 0 {
            return true;
        }
        let r = a.get(ONCE_PATH, Some(&pending), &[]);
        assert!(
            r.status == 200 || r.reason() == "state_unavailable",
            "{}",
            r.status
        );
        passed += usize::from(r.status == 200);
        passed > 0
    });
    assert_eq!(passed, 1);
    // Each gateway finds the new owner by itself (until then: 503).
    for gw in [&a, &b] {
        let r = past_a_hiccup(gw, ONCE_PATH, &pending);
        assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
        // Used before the kill, replicated: still used.
        let r = past_a_hiccup(gw, ONCE_PATH, &used);
        assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    }
    // Both gateways write to the promoted replica; the other reads it.
    for (i, (token, key)) in after.iter().enumerate() {
        let (first, second) = if i == 0 { (&a, &b) } else { (&b, &a) };
        eventually(30, "a fresh consent on the failed-over slots", || {
            let r = first.get(ONCE_PATH, Some(token), &[]);
            assert!(
                r.status == 200 || r.reason() == "state_unavailable",
                "{}",
                r.status
            );
            r.status == 200
        });
        let r = past_a_hiccup(second, ONCE_PATH, token);
        assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
        assert_eq!(cluster.owner(key), replica);
    }
    assert_eq!(cluster.owner(&used_key), replica);
    assert_eq!(cluster.owner(&pending_key), replica);
    assert_eq!(
        world.echo.seen().len(),
        3,
        "one request per consent upstream"
    );
    for gw in [&a, &b] {
        eventually(20, "/readyz is 200 again", || {
            gw.admin_get("/readyz").status == 200
        });
    }
}

#[test]
fn a_hash_tag_in_the_prefix_lets_a_cluster_make_one_call() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let world = World::new();
    let state = cluster_state(&cluster).replace("key_prefix: \"t:\"", "key_prefix: \"{cgw}:\"");
    let (a, b) = two_replicas(&world, &state);
    assert_rate_limited_once(&world, &a, &b);
    let metrics = b.admin_get("/metrics").body;
    assert_store_calls(&metrics, true);
    // Every key on the one node that serves the tag's slot.
    let once = cluster.keys("{cgw}:once:*");
    assert!(once.len() >= 3, "{once:?}");
    let owner = cluster.owner(&once[0]);
    for key in once.iter().chain(&cluster.keys("{cgw}:rl:*")) {
        assert_eq!(cluster.owner(key), owner, "{key}");
    }
}

#[test]
fn tls_with_the_right_ca_works_and_a_wrong_ca_fails_closed() {
    let pki = Pki::new();
    let Some(server) = TlsRedis::start(&pki) else {
        return;
    };
    let world = World::new();
    let state = redis_block(&format!(
        "    url: \"rediss://127.0.0.1:{}/0\"\n    tls: {{ ca_file: redis-ca.pem }}\n",
        server.port
    ));
    let text = config(&state, 5);
    let good = world.start_with(&text, &[("redis-ca.pem", &pki.ca_pem)]);
    let token = world.valid_token();
    assert_eq!(good.get(ONCE_PATH, Some(&token), &[]).status, 200);
    let r = good.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    assert!(server.cli(&["KEYS", "t:once:*"]).contains("t:once:"));
    assert_eq!(world.echo.seen().len(), 1);

    // Another CA: the server is not trusted, nothing is used or passed.
    let other = Pki::new();
    assert_fails_closed(&world, &text, &[("redis-ca.pem", &other.ca_pem)]);
    // The right CA's gateway is unaffected.
    assert_eq!(
        good.get(ONCE_PATH, Some(&world.valid_token()), &[]).status,
        200
    );
}

/// The `state:` block of `set` over TLS, with `tls` (the lines under it).
fn tls_sentinel_state(set: &TlsSentinelSet, tls: &str) -> String {
    redis_block(&format!(
        "    sentinel:\n      master_name: {MASTER_NAME}\n      urls: [\"{}\"]\n    tls: {{ {tls} }}\n",
        set.sentinel_url()
    ))
}

const MTLS: &str = "ca_file: redis-ca.pem, cert_file: redis-client.pem, key_file: redis-client.key";

/// The files of a gateway that trusts `ca` and presents `pki`'s client
/// certificate.
fn tls_files<'a>(ca: &'a str, pki: &'a Pki) -> [(&'a str, &'a str); 3] {
    [
        ("redis-ca.pem", ca),
        ("redis-client.pem", &pki.client_cert_pem),
        ("redis-client.key", &pki.client_key_pem),
    ]
}

/// A gateway on `text` with `files` that cannot reach the store: one-time
/// routes and `on_store_error: deny` limits are 503 `state_unavailable`,
/// nothing goes upstream, `/readyz` says the store is unreachable.
fn assert_fails_closed(world: &World, text: &str, files: &[(&str, &str)]) {
    world.echo.clear();
    let bad = world.spawn(text, files);
    // Ready but for the store: the issuers' keys are in (else the
    // requests below would be refused for want of keys, not of a store).
    let readyz = "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n";
    eventually(30, "/readyz says only the store is unreachable", || {
        common::raw(bad.admin, readyz).is_ok_and(|r| {
            let body = r.json();
            r.status == 503
                && body["reason"] == "state store unreachable"
                && body["state"]["reachable"] == false
        })
    });
    for _ in 0..5 {
        let r = bad.get(ONCE_PATH, Some(&world.valid_token()), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        let r = bad.get("/strict", Some(&world.valid_token()), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
    }
    assert!(world.echo.seen().is_empty(), "nothing went upstream");
    let r = bad.admin_get("/readyz");
    assert_eq!(
        (r.status, r.json()["state"]["reachable"].clone()),
        (503, false.into())
    );
    assert_eq!(bad.status()["state"]["reachable"], false);
}

#[test]
fn sentinel_over_tls_reaches_the_sentinels_and_the_master_and_a_wrong_ca_fails_closed() {
    let pki = Pki::new();
    let Some(set) = TlsSentinelSet::start(&pki) else {
        return;
    };
    let world = World::new();
    let text = config(&tls_sentinel_state(&set, MTLS), 5);
    // Every server is TLS only (`port 0`) and asks for a client
    // certificate: the sentinel and the master it names are both reached
    // over TLS, with the client certificate.
    let good = world.start_with(&text, &tls_files(&pki.ca_pem, &pki));
    let token = world.valid_token();
    assert_eq!(good.get(ONCE_PATH, Some(&token), &[]).status, 200);
    let r = good.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    assert!(set
        .files
        .cli(set.master_port, &["KEYS", "t:once:*"])
        .contains("t:once:"));
    assert_eq!(good.status()["state"]["mode"], "sentinel");
    assert_eq!(good.status()["state"]["reachable"], true);
    assert_eq!(world.echo.seen().len(), 1);

    // Another CA: nothing is trusted, nothing is used or passed.
    let other = Pki::new();
    assert_fails_closed(&world, &text, &tls_files(&other.ca_pem, &pki));
    // The right CA but no client certificate: the servers refuse it.
    let no_client = config(&tls_sentinel_state(&set, "ca_file: redis-ca.pem"), 5);
    assert_fails_closed(&world, &no_client, &[("redis-ca.pem", &pki.ca_pem)]);
    // The right CA's gateway is unaffected.
    assert_eq!(
        good.get(ONCE_PATH, Some(&world.valid_token()), &[]).status,
        200
    );
}

#[test]
fn sentinel_over_tls_checks_the_masters_certificate_too() {
    // The sentinel's certificate from one CA, the master's from another.
    let (sentinel, data) = (Pki::new(), Pki::new());
    let Some(set) = TlsSentinelSet::start_split(&sentinel, &data) else {
        return;
    };
    let world = World::new();
    let text = config(&tls_sentinel_state(&set, MTLS), 5);
    // Trusting the sentinel's CA alone: the sentinel answers, the master
    // it names is not trusted.
    assert_fails_closed(&world, &text, &tls_files(&sentinel.ca_pem, &sentinel));
    // Trusting both: it works.
    let both = format!("{}{}", sentinel.ca_pem, data.ca_pem);
    let good = world.start_with(&text, &tls_files(&both, &sentinel));
    let token = world.valid_token();
    assert_eq!(good.get(ONCE_PATH, Some(&token), &[]).status, 200);
    let r = good.get(ONCE_PATH, Some(&token), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
}

#[test]
fn sentinel_cluster_and_tls_config_is_checked() {
    use consent_gateway::config::{RedisServers, StateBackend};
    let path = std::path::Path::new("/tmp/g.yaml");
    let load = |servers: &str| {
        consent_gateway::config::load_str(&offline(&redis_block(servers)), path)
            .map(|c| c.state)
            .map_err(|e| e.to_string())
    };
    let sentinel = "    sentinel:\n      master_name: m1\n      urls: [\"redis://:pw@s1:26379\", \"redis://:pw@s2:26379\"]\n      password: secret\n";
    match load(sentinel) {
        Ok(StateBackend::Redis(r)) => {
            assert_eq!(r.servers.mode(), "sentinel");
            assert!(
                matches!(&r.servers, RedisServers::Sentinel { master_name, urls, .. }
                if master_name == "m1" && urls.len() == 2)
            );
        }
        other => panic!("{other:?}"),
    }
    let cluster = "    cluster: { urls: [\"rediss://n1:6379\", \"rediss://n2:6379\"] }\n";
    match load(cluster) {
        Ok(StateBackend::Redis(r)) => {
            assert_eq!((r.servers.mode(), r.servers.tls()), ("cluster", true));
            assert!(r.tls.is_none(), "the system's roots");
        }
        other => panic!("{other:?}"),
    }
    let cases: &[(&str, &str)] = &[
        (
            "    url: \"redis://x:6379\"\n    cluster: { urls: [\"redis://y:6379\"] }\n",
            "state.redis: give exactly one",
        ),
        ("", "state.redis: give exactly one"),
        (
            "    sentinel: { master_name: m, urls: [] }\n",
            "state.redis.sentinel.urls",
        ),
        (
            "    sentinel: { master_name: \"\", urls: [\"redis://s:26379\"] }\n",
            "state.redis.sentinel.master_name",
        ),
        (
            "    sentinel: { master_name: m, urls: [\"redis://:a@s1:26379\", \"redis://:b@s2:26379\"] }\n",
            "state.redis.sentinel.urls: the sentinels must share",
        ),
        (
            "    sentinel: { master_name: m, urls: [\"http://s:26379\"] }\n",
            "state.redis.sentinel.urls[0]",
        ),
        (
            "    cluster: { urls: [\"redis://n1:6379/2\"] }\n",
            "state.redis.cluster.urls[0]",
        ),
        (
            "    cluster: { urls: [\"redis://n1:6379\", \"rediss://n2:6379\"] }\n",
            "mixes `redis://` and `rediss://`",
        ),
        (
            "    url: \"redis://x:6379\"\n    tls: { ca_file: ca.pem }\n",
            "state.redis.tls",
        ),
        (
            "    url: \"rediss://x:6379\"\n    tls: { ca_file: /nonexistent/ca.pem }\n",
            "state.redis.tls.ca_file",
        ),
        (
            "    url: \"rediss://x:6379\"\n    tls: { cert_file: /nonexistent/c.pem }\n",
            "`cert_file` and `key_file`",
        ),
        (
            "    cluster: { urls: [\"redis://n1:6379\"] }\n    wait_for_replicas: 1\n",
            "state.redis.wait_for_replicas",
        ),
    ];
    for (servers, want) in cases {
        let err = load(servers).expect_err(servers);
        assert!(err.contains(want), "{servers}: {err}");
        assert!(
            !err.contains("pw@") && !err.contains(":a@"),
            "no password echoed: {err}"
        );
    }
}

#[test]
fn wait_for_replicas_gives_a_use_back_and_fails_closed_while_no_replica_has_it() {
    let Some(mut set) = SentinelSet::start() else {
        return;
    };
    let world = World::new();
    let state = redis_block(&format!(
        "    sentinel:\n      master_name: {MASTER_NAME}\n      urls: [\"{}\"]\n    wait_for_replicas: 1\n",
        set.sentinel_url()
    ))
    // `WAIT` gets half the time-out; a whole second leaves a loaded machine
    // room for the reply (a call that times out after its `SET` keeps the
    // consent used, failing closed, and the fresh consents below would be
    // `consent_already_used`).
    .replace("timeout: 200ms", "timeout: 1s");
    let gw = world.start(&config(&state, 5));
    let used = world.valid_token();
    assert_eq!(gw.get(ONCE_PATH, Some(&used), &[]).status, 200);
    assert_eq!(
        gw.get(ONCE_PATH, Some(&used), &[]).reason(),
        "consent_already_used"
    );
    // The combined call: the script and `WAIT` pipelined (the first one
    // loads the script on this server).
    let limited_used = world.valid_token();
    assert_eq!(gw.get(LIMITED_ONCE, Some(&limited_used), &[]).status, 200);
    assert_eq!(
        gw.get(LIMITED_ONCE, Some(&limited_used), &[]).reason(),
        "consent_already_used"
    );

    // No replica: a use would live on the master alone.
    set.replica.stop();
    eventually(20, "the master has no replica", || {
        cli(set.master.port, &["INFO", "replication"]).contains("connected_slaves:0")
    });
    world.echo.clear();
    let (fresh, limited) = (world.valid_token(), world.valid_token());
    for _ in 0..3 {
        let r = gw.get(ONCE_PATH, Some(&fresh), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
        let r = gw.get(LIMITED_ONCE, Some(&limited), &[]);
        assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
    }
    assert!(world.echo.seen().is_empty(), "nothing went upstream");
    let keys = set.master.command(&["KEYS", "t:once:*"]);
    assert!(
        keys.starts_with("*2\r\n"),
        "given back, only the first uses are kept: {keys}"
    );

    // The replica is back: the same consent can be used, once.
    set.replica.restart();
    eventually(20, "the consent is used once a replica has it", || {
        gw.get(ONCE_PATH, Some(&fresh), &[]).status == 200
    });
    let r = gw.get(ONCE_PATH, Some(&fresh), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    assert_eq!(gw.get(LIMITED_ONCE, Some(&limited), &[]).status, 200);
    let r = gw.get(LIMITED_ONCE, Some(&limited), &[]);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    assert_eq!(world.echo.seen().len(), 2);
}

/// A loopback TCP relay in front of a real `redis-server`: the client's
/// bytes go through at once; while `late` is set, every reply is held
/// 300 ms first (the store ran the command, its answer comes too late).
/// A thread per connection and direction.
struct LateReplies {
    addr: std::net::SocketAddr,
    late: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Replies held right now.
    held: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LateReplies {
    fn start(redis_port: u16) -> LateReplies {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("the relay's address");
        let late = Arc::new(AtomicBool::new(false));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, holding) = (Arc::clone(&late), Arc::clone(&held));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    continue;
                };
                let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                std::thread::spawn(move || relay(client, server, None));
                let hold = (Arc::clone(&flag), Arc::clone(&holding));
                std::thread::spawn(move || relay(server2, client2, Some(hold)));
            }
        });
        LateReplies { addr, late, held }
    }

    fn set_late(&self, late: bool) {
        self.late.store(late, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether no reply is held any more.
    fn drained(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// The `state:` block of a store reached through the relay, with the
    /// default time-out.
    fn state(&self) -> String {
        format!(
            "state:\n  backend: redis\n  redis: {{ url: \"redis://{}/0\", key_prefix: \"t:\", timeout: 50ms }}",
            self.addr
        )
    }
}

/// Copies `from` to `to`; each chunk held 300 ms first while the flag of
/// `hold` is set (its counter says how many are held).
fn relay(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    hold: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    )>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering::SeqCst;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let held = hold.as_ref().filter(|(late, _)| late.load(SeqCst));
        if let Some((_, count)) = held {
            count.fetch_add(1, SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let written = to.write_all(&buf[..n]);
        if let Some((_, count)) = held {
            count.fetch_sub(1, SeqCst);
        }
        if written.is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// One round of `a_claim_whose_reply_came_too_late_is_given_back` on
/// `path` (`op`: its store call): `false` when the late request did not
/// time out in its claim call (a hiccup before it left the circuit open:
/// the round proves nothing and runs again).
fn late_reply_round(
    world: &World,
    gw: &Gateway,
    relay: &LateReplies,
    path: &str,
    op: &str,
) -> bool {
    let timeouts = || {
        gw.series(
            "consent_gateway_state_requests_total",
            &[("op", op), ("outcome", "timeout")],
        )
        .unwrap_or(0.0)
    };
    // The store answers (the circuit is closed) before the late request
    // (`/readyz` is 200 only then: a one-time route needs the store).
    eventually(15, "/readyz says the store is reachable", || {
        gw.admin_get("/readyz").status == 200
    });
    // One use of another consent first: the route's script is then cached
    // in Redis, so the late request's call runs at its first `EVALSHA`
    // (a `NOSCRIPT` reply would be late too, and nothing claimed).
    let r = past_a_hiccup(gw, path, &world.valid_token());
    assert_eq!(r.status, 200, "{}", r.reason());
    world.echo.clear();
    let token = world.valid_token();
    let before = timeouts();
    relay.set_late(true);
    let r = gw.get(path, Some(&token), &[]);
    relay.set_late(false);
    assert_eq!((r.status, r.reason()), (503, "state_unavailable".into()));
    assert!(world.echo.seen().is_empty(), "nothing went upstream");
    if timeouts() <= before {
        return false;
    }
    // The claim ran in Redis (the relay passed it at once); only its reply
    // was late. Given back: the same consent goes through once, then not
    // (once the late replies are out and the store answers again).
    eventually(15, "the relay holds no reply", || relay.drained());
    eventually(15, "/readyz says the store is reachable again", || {
        gw.admin_get("/readyz").status == 200
    });
    let r = past_a_hiccup(gw, path, &token);
    assert_eq!(
        r.status,
        200,
        "{path}: the consent whose claim timed out was given back: {}",
        r.reason()
    );
    assert_eq!(world.echo.seen().len(), 1);
    let r = past_a_hiccup(gw, path, &token);
    assert_eq!((r.status, r.reason()), (403, "consent_already_used".into()));
    true
}

#[test]
fn a_claim_whose_reply_came_too_late_is_given_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let relay = LateReplies::start(redis.port);
    let world = World::new();
    let gw = world.start(&config(&relay.state(), 1000));
    // `SET NX PX` alone, then the combined rate and one-time script (a
    // rate refusal never `SET`s; the give-back deletes only its own claim).
    for (path, op) in [
        (ONCE_PATH, "use_once"),
        (LIMITED_ONCE, "rate_limit_use_once"),
    ] {
        let conclusive = (0..3).any(|_| late_reply_round(&world, &gw, &relay, path, op));
        assert!(
            conclusive,
            "{path}: three late requests never reached the store"
        );
    }
    // One warning per time-out, naming the hashed key, never the subject.
    let stderr = gw.stderr();
    let warned = |route: &str| {
        let needle = format!("store call timed out on route {route}:");
        stderr.lines().filter(|l| l.contains(&needle)).count()
    };
    assert!(
        warned("once") >= 1 && warned("once-limited") >= 1,
        "{stderr}"
    );
    assert!(!stderr.contains("17839116535"), "{stderr}");
}
