//! Foundation behaviour through real HTTP: routing and precedence, 404/405,
//! strip_prefix, round robin, upstream failures, header hygiene, request
//! sanity (duplicate Host, oversize headers, path tricks), request ids.

mod common;

use common::*;

const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  limits:
    max_request_header_bytes: 4096
upstreams:
  - name: echo
    targets: ["{upstream}"]
  - name: pair
    targets: ["{upstream}", "{upstream2}"]
  - name: closed
    targets: ["127.0.0.1:1"]
  - name: slow
    targets: ["{upstream2}"]
    read_timeout: 300ms
routes:
  - name: exact-host
    host: api.example.no
    path: /hosted/{id}
    upstream: echo
    auth: none
  - name: wildcard-host
    host: "*.example.no"
    path: /hosted/{id}
    upstream: pair
    auth: none
  - name: param-first
    path: /items/{id}
    methods: [GET, POST]
    upstream: echo
    auth: none
  - name: literal-second
    path: /items/special
    upstream: pair
    auth: none
  - name: stripped
    path: /income/{*rest}
    strip_prefix: /income
    upstream: echo
    auth: none
    forward:
      preserve_host: false
  - name: balanced
    path: /rr
    upstream: pair
    auth: none
  - name: dead
    path: /dead
    upstream: closed
    auth: none
  - name: hanging
    path: /hang
    upstream: slow
    auth: none
"#;

fn host_get(gw: &Gateway, host: &str, path: &str) -> Response {
    gw.raw(&format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ))
}

#[test]
fn routing_precedence_methods_and_rewrites() {
    let world = World::new();
    let gw = world.start(CONFIG);

    // Exact host before wildcard; wildcard needs a label; host port ignored.
    world.echo.clear();
    assert_eq!(
        host_get(&gw, "API.example.no:8080", "/hosted/1").status,
        200
    );
    assert_eq!(world.echo.seen().len(), 1, "exact-host route goes to echo");
    assert_eq!(
        host_get(&gw, "example.no", "/hosted/1").reason(),
        "no_route"
    );
    assert_eq!(host_get(&gw, "other.no", "/hosted/1").status, 404);

    // First match in file order: the param route shadows the literal one.
    world.echo.clear();
    world.echo2.clear();
    let r = host_get(&gw, "x", "/items/special");
    assert_eq!(r.status, 200);
    assert_eq!(world.echo.seen().len(), 1);
    assert!(world.echo2.seen().is_empty());

    // 405 with Allow, no fall-through; HEAD is not GET.
    let r = gw.raw("DELETE /items/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.reason(), "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert!(r.header("www-authenticate").is_none());
    let r = gw.raw("HEAD /items/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);

    // 404 is a problem document with the request id.
    let r = gw.get("/nowhere", None, &[("X-Request-Id", "req-abc")]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(body["type"], "urn:consent-gateway:no_route");
    assert_eq!(body["status"], 404);
    assert_eq!(body["request_id"], "req-abc");
    assert_eq!(r.header("x-request-id"), Some("req-abc"));

    // strip_prefix is segment-aware; preserve_host false sends the target.
    world.echo.clear();
    assert_eq!(gw.get("/income/a/b?q=1", None, &[]).status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen[0].uri, "/a/b?q=1");
    assert_eq!(
        seen[0].header("host"),
        Some(world.echo.addr().to_string().as_str())
    );
    assert_eq!(seen[0].header("x-forwarded-host"), Some("api.example.no"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn round_robin_spreads_over_targets() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    world.echo2.clear();
    for _ in 0..10 {
        assert_eq!(gw.get("/rr", None, &[]).status, 200);
    }
    let (a, b) = (world.echo.seen().len(), world.echo2.seen().len());
    assert_eq!(a + b, 10);
    assert!(a >= 3 && b >= 3, "round robin uneven: {a} vs {b}");
}

#[test]
fn upstream_failures_are_502_and_504_problems() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let r = gw.get("/dead", None, &[]);
    assert_eq!(r.status, 502);
    assert_eq!(r.reason(), "upstream_unavailable");
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.header("www-authenticate").is_none());
    world.echo2.set_delay(std::time::Duration::from_secs(3));
    let r = gw.get("/hang", None, &[]);
    assert_eq!(r.status, 504);
    assert_eq!(r.reason(), "upstream_timeout");
    assert!(r.header("x-request-id").is_some());
}

#[test]
fn spoofed_consent_headers_and_hop_by_hop_never_reach_upstream() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    let r = gw.raw(
        "GET /items/1 HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\n\
         X-Consent-Id: spoof\r\nX_Consent_Subject: 1\r\nx.consent.from: 2\r\nX-CONSENT-TO: 3\r\n\
         x~consent~metadata-inntektsaar: 4\r\nX-Consent-: 5\r\n\
         X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
         Proxy-Authorization: Basic eA==\r\nX-Real-IP: 6.6.6.6\r\nX-Secret: s\r\n\
         Forwarded: for=1.2.3.4\r\nX-Forwarded-For: 9.9.9.9\r\nX-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.example\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    let names: Vec<&str> = seen[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    for n in &names {
        let folded: String = n
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        assert!(
            !folded.starts_with("x-consent-"),
            "spoofed {n} reached upstream"
        );
    }
    for gone in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
        "x-real-ip",
        "x-secret",
    ] {
        assert!(!names.contains(&gone), "{gone} reached upstream");
    }
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].header("forwarded"), Some("for=1.2.3.4"));
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("9.9.9.9, 127.0.0.1")
    );
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen[0].header("x-forwarded-host"), Some("x"));
    assert!(r.header("x-request-id").is_some());
    assert_eq!(seen[0].header("x-request-id"), r.header("x-request-id"));
}

#[test]
fn http_1_0_without_host_forwards_no_client_forwarded_host() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    let r = gw.raw("GET /items/1 HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n");
    assert_eq!(r.status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-host"), None);
    // The same request over HTTP/1.1 without a host is refused unrouted.
    world.echo.clear();
    let r = gw.raw("GET /items/1 HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    assert_eq!(r.reason(), "invalid_request");
    assert!(world.echo.seen().is_empty());
}

#[test]
fn malformed_requests_are_refused_before_routing() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    // pingora's HTTP/1 parser itself refuses an ambiguous authority with a
    // bare 400 before any hook runs: never routed, never forwarded.
    let r = gw.raw("GET /items/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 400);
    assert!(r.header("www-authenticate").is_none());
    // Conflicting Content-Length: also refused by the parser.
    let r = gw.raw("POST /items/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nab");
    assert_eq!(r.status, 400);

    let big = "a".repeat(5000);
    let r = gw.raw(&format!(
        "GET /items/1 HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 431);
    assert_eq!(r.reason(), "headers_too_large");

    let r = gw.raw("CONNECT example.no:443 HTTP/1.1\r\nHost: example.no:443\r\n\r\n");
    assert_eq!(r.status, 405);
    assert_eq!(r.reason(), "method_not_allowed");

    for path in [
        "/items/a%2fb",
        "/items/a%2Fb",
        "/items/a%5cb",
        "/items/a%00",
        "/items/../../etc",
        "/items/%2e%2e/%2e%2e/x",
        "/items/a%zz",
    ] {
        let r = gw.get(path, None, &[]);
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.reason(), "invalid_request", "{path}");
    }
    assert!(
        world.echo.seen().is_empty(),
        "a refused request reached upstream"
    );

    // Normalised, then matched and forwarded in that one form.
    let r = gw.get("/x/../items/%61bc", None, &[]);
    assert_eq!(r.status, 200);
    let r = gw.get("//items//7", None, &[]);
    assert_eq!(r.status, 200);
    let uris: Vec<String> = world.echo.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, vec!["/items/abc".to_string(), "/items/7".to_string()]);

    // Refusals before routing are counted with route "-".
    assert!(gw.metric(r#"consent_gateway_http_errors_total{kind="invalid_request"}"#) >= Some(1.0));
    assert!(
        gw.metric(r#"consent_gateway_requests_total{decision="deny",reason="headers_too_large",route="-"}"#)
            >= Some(1.0)
    );
}

#[test]
fn request_id_is_kept_when_sane_and_replaced_when_not() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let r = gw.get("/items/1", None, &[("X-Request-Id", "abc-123")]);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let long = "x".repeat(200);
    let r = gw.get("/items/1", None, &[("X-Request-Id", &long)]);
    let id = r.header("x-request-id").unwrap();
    assert_ne!(id, long);
    assert!(!id.is_empty() && id.len() <= 128);
}

#[test]
fn admin_endpoints_answer() {
    let world = World::new();
    let gw = world.start(CONFIG);
    assert_eq!(gw.admin_get("/healthz").status, 200);
    assert_eq!(gw.admin_get("/readyz").status, 200);
    let status = gw.admin_get("/status").json();
    assert_eq!(status["generation"], 1);
    assert_eq!(status["config_sha256"].as_str().map(str::len), Some(64));
    assert!(status["last_reload_error"].is_null());
    let metrics = gw.admin_get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("consent_gateway_config_generation 1"));
}

#[test]
fn active_health_check_takes_a_failing_target_out_of_rotation() {
    let world = World::new();
    let gw = world.start(
        r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
upstreams:
  - name: pair
    targets: ["{upstream}", "{upstream2}"]
    health_check:
      path: /health
      interval: 200ms
routes:
  - name: balanced
    path: /rr
    upstream: pair
    auth: none
"#,
    );
    world.echo2.set_status(Some(500));
    // Once the check has seen the 500, every request goes to the healthy one.
    eventually(10, "target 2 marked unhealthy", || {
        world.echo.clear();
        world.echo2.clear();
        for _ in 0..4 {
            gw.get("/rr", None, &[]);
        }
        world.echo2.seen().iter().all(|r| r.uri == "/health") && world.echo.seen().len() >= 4
    });
    world.echo2.set_status(None);
    eventually(10, "target 2 back in rotation", || {
        world.echo2.clear();
        for _ in 0..4 {
            gw.get("/rr", None, &[]);
        }
        world.echo2.seen().iter().any(|r| r.uri == "/rr")
    });
}
