//! SPEC section 13, external authorization: the HTTP authorization listener
//! (`server.authz.listen`) behind a real nginx (`auth_request`, with the
//! shipped snippets in deploy/nginx/), and by raw requests shaped as Envoy
//! and Traefik send them. Fail closed: without the shared secret or without
//! the original request's facts a check is never allowed.

mod common;
#[path = "common/grpc.rs"]
mod grpc;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;

const SECRET: &str = "s3cret-s3cret-s3cret";

const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  authz:
    listen: "{authz}"
    grpc_listen: "{grpc}"
    original_request: auto
    path_prefix: /envoy-authz
    shared_secret_file: authz-secret
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: income
    path: /income/{fnr}/{year}
    methods: [GET]
    upstream: echo
    issuers: [test]
    scopes:
      all: ["demo:inntekt.read"]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { path_param: fnr }
      metadata:
        match:
          inntektsaar: { path_param: year }
    forward:
      strip_authorization: true
  - name: search
    path: /people/search
    methods: [POST]
    upstream: echo
    issuers: [test]
    max_body_bytes: 64
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { body: { json_pointer: /person/fnr } }
  - name: limited
    path: /limited/{fnr}
    methods: [GET]
    upstream: echo
    issuers: [test]
    rate_limit: { per: consumer, requests: 1, period: 1h }
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { path_param: fnr }
audit:
  personal_data: masked
"#;

const INCOME: &str = "/income/17839116535/2025";

/// A gateway with its authorization listener, ready on both.
fn start(world: &World) -> (Gateway, SocketAddr) {
    let (gw, authz, _) = start_both(world);
    (gw, authz)
}

/// A gateway with both authorization listeners (HTTP, gRPC), ready.
fn start_both(world: &World) -> (Gateway, SocketAddr, SocketAddr) {
    let authz = free_addr();
    let grpc = free_addr();
    let template = CONFIG
        .replace("{authz}", &authz.to_string())
        .replace("{grpc}", &grpc.to_string());
    let gw = world.start_with(&template, &[("authz-secret", &format!("{SECRET}\n"))]);
    eventually(20, "the authz listener", || {
        raw(
            authz,
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .is_ok()
    });
    eventually(20, "the gRPC authz listener", || {
        std::net::TcpStream::connect(grpc).is_ok()
    });
    (gw, authz, grpc)
}

/// Sends a check with these header lines to the authorization listener.
fn check(authz: SocketAddr, method: &str, target: &str, headers: &[(&str, String)]) -> Response {
    let mut request = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw(authz, &request).expect("check")
}

fn secret() -> (&'static str, String) {
    ("X-Consent-Gateway-Authz", SECRET.to_string())
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

/// Traefik ForwardAuth (doc.traefik.io/traefik/middlewares/http/forwardauth/):
/// a GET to the `address`, the original request's headers copied, and
/// `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` (plus `-For`) set.
fn traefik(authz: SocketAddr, method: &str, uri: &str, extra: &[(&str, String)]) -> Response {
    let mut headers = vec![
        ("Host", authz.to_string()),
        ("X-Forwarded-Method", method.to_string()),
        ("X-Forwarded-Proto", "https".to_string()),
        ("X-Forwarded-Host", "api.example.no".to_string()),
        ("X-Forwarded-Uri", uri.to_string()),
        ("X-Forwarded-For", "192.0.2.10".to_string()),
    ];
    headers.extend_from_slice(extra);
    check(authz, "GET", "/", &headers)
}

/// Envoy HTTP ext_authz (envoyproxy.io, `extensions.filters.http.ext_authz.v3
/// .HttpService`): the original method, `path_prefix` + the original path,
/// `Host` = the original `:authority`, the allowed headers (Authorization
/// among the defaults) and `x-envoy-*` / `x-forwarded-*` additions.
fn envoy(authz: SocketAddr, method: &str, path: &str, extra: &[(&str, String)]) -> Response {
    let mut headers = vec![
        ("Host", "api.example.no".to_string()),
        ("Content-Length", "0".to_string()),
        ("x-forwarded-proto", "https".to_string()),
        ("x-envoy-internal", "true".to_string()),
        ("x-request-id", "envoy-id-1".to_string()),
    ];
    headers.extend_from_slice(extra);
    check(authz, method, &format!("/envoy-authz{path}"), &headers)
}

fn consent_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-consent-"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    out.sort();
    out
}

#[test]
fn traefik_and_envoy_conventions_allow_and_deny_like_the_proxy() {
    let world = World::new();
    let (gw, authz) = start(&world);
    let token = world.valid_token();

    let allowed = traefik(authz, "GET", INCOME, &[secret(), bearer(&token)]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(allowed.body.is_empty());
    // What the proxy forwards for the same request.
    world.echo.clear();
    let proxied = gw.get(INCOME, Some(&token), &[]);
    assert_eq!(proxied.status, 200);
    let seen = world.echo.seen();
    let expected = consent_headers(&seen[0].headers);
    assert!(expected.len() >= 10, "{expected:?}");
    assert_eq!(consent_headers(&allowed.headers), expected);

    let envoy_allowed = envoy(authz, "GET", INCOME, &[secret(), bearer(&token)]);
    assert_eq!(envoy_allowed.status, 200, "{envoy_allowed:?}");
    assert_eq!(consent_headers(&envoy_allowed.headers), expected);
    assert_eq!(envoy_allowed.header("x-request-id"), Some("envoy-id-1"));

    // A client copy is named for Envoy to remove, unless the allow sets
    // that name: Envoy removes after it sets (ext_authz.cc, onComplete), and
    // the set overwrites the copy.
    let spoofed = [
        secret(),
        bearer(&token),
        ("X-Consent-Subject", "1".into()),
        ("X-Consent-Bogus", "1".into()),
    ];
    let r = envoy(authz, "GET", INCOME, &spoofed);
    assert_eq!(r.status, 200);
    let remove = r.header("x-envoy-auth-headers-to-remove").unwrap_or("");
    assert!(remove.split(',').any(|n| n == "x-consent-bogus"), "{r:?}");
    assert!(
        !remove.split(',').any(|n| n == "x-consent-subject"),
        "{r:?}"
    );
    assert_eq!(r.header("x-consent-subject"), Some(PERSON));
    // The route strips the token before the backend, as the proxy does.
    assert!(remove.split(',').any(|n| n == "authorization"), "{r:?}");

    let denials = [
        (
            traefik(authz, "GET", INCOME, &[secret()]),
            401,
            "missing_token",
        ),
        (
            traefik(
                authz,
                "GET",
                "/income/05917596738/2025",
                &[secret(), bearer(&token)],
            ),
            403,
            "consent_subject_mismatch",
        ),
        (
            envoy(authz, "GET", "/nowhere", &[secret(), bearer(&token)]),
            404,
            "no_route",
        ),
        (
            envoy(authz, "POST", INCOME, &[secret(), bearer(&token)]),
            405,
            "method_not_allowed",
        ),
        (
            envoy(authz, "GET", INCOME, &[secret(), bearer("abc.def")]),
            401,
            "malformed_token",
        ),
    ];
    for (response, status, reason) in denials {
        assert_eq!(response.status, status, "{reason}: {response:?}");
        assert_eq!(response.reason(), reason);
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        assert!(consent_headers(&response.headers).is_empty());
    }
    assert_eq!(
        traefik(authz, "GET", INCOME, &[secret()]).header("www-authenticate"),
        Some(r#"Bearer realm="consent-gateway""#)
    );
    let checks = |decision| {
        gw.series(
            "consent_gateway_authz_checks_total",
            &[("protocol", "http"), ("decision", decision)],
        )
        .unwrap_or(0.0)
    };
    assert!(checks("allow") >= 3.0);
    assert!(checks("deny") >= 5.0);
    // The audit writer is asynchronous (a bounded queue): wait for the line.
    eventually(10, "the audit line of envoy-id-1", || {
        gw.audit_lines()
            .iter()
            .any(|l| l["request_id"] == "envoy-id-1")
    });
}

/// The audit line of request `id`, once the asynchronous writer has it.
fn audit_line(gw: &Gateway, id: &str) -> serde_json::Value {
    let mut line = None;
    eventually(10, &format!("the audit line of {id}"), || {
        line = gw.audit_lines().into_iter().find(|l| l["request_id"] == id);
        line.is_some()
    });
    line.unwrap_or_default()
}

#[test]
fn without_the_secret_or_the_facts_nothing_is_allowed() {
    let world = World::new();
    let (_gw, authz) = start(&world);
    let token = world.valid_token();
    let wrong = (
        "X-Consent-Gateway-Authz",
        "s3cret-s3cret-s3creX".to_string(),
    );
    let short = ("X-Consent-Gateway-Authz", "s3cret".to_string());
    for headers in [
        vec![bearer(&token)],
        vec![wrong, bearer(&token)],
        vec![short, bearer(&token)],
    ] {
        let r = traefik(authz, "GET", INCOME, &headers);
        assert_eq!(r.status, 403, "{r:?}");
        assert_eq!(r.reason(), "consumer_not_allowed");
        assert!(consent_headers(&r.headers).is_empty());
        let r = envoy(authz, "GET", INCOME, &headers);
        assert_eq!(r.status, 403, "{r:?}");
    }
    let twice = [secret(), secret(), bearer(&token)];
    assert_eq!(envoy(authz, "GET", INCOME, &twice).status, 403);

    // Missing facts: 400 invalid_request, never an allow.
    let nginx_without_method = [
        secret(),
        bearer(&token),
        ("Host", "api.example.no".into()),
        ("X-Original-URI", INCOME.into()),
    ];
    let traefik_without_host = [
        secret(),
        bearer(&token),
        ("X-Forwarded-Method", "GET".into()),
        ("X-Forwarded-Proto", "https".into()),
        ("X-Forwarded-Uri", INCOME.into()),
    ];
    let envoy_without_prefix = [secret(), bearer(&token), ("Host", "api.example.no".into())];
    for r in [
        check(authz, "GET", "/auth", &nginx_without_method),
        check(authz, "GET", "/", &traefik_without_host),
        check(authz, "GET", INCOME, &envoy_without_prefix),
    ] {
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(r.reason(), "invalid_request");
    }
}

/// A real nginx (Debian's nginx-light) running the shipped snippets.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NGINX: &str = "/usr/sbin/nginx";

fn start_nginx(authz: SocketAddr, upstream: SocketAddr) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = free_addr();
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx");
    for file in ["consent-authz-locations.conf", "consent-authz-protect.conf"] {
        std::fs::copy(format!("{deploy}/{file}"), dir.path().join(file)).expect("copy snippet");
    }
    let d = dir.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream consent_gateway_authz {{ server {authz}; }}
    upstream backend {{ server {upstream}; }}
    map "" $consent_gateway_authz_secret {{ default "{SECRET}"; }}
    server {{
        listen {addr};
        include consent-authz-locations.conf;
        location / {{
            include consent-authz-protect.conf;
            proxy_pass http://backend;
        }}
    }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let nginx = Nginx { child, addr, dir };
    eventually(20, "nginx listening", || {
        raw(
            addr,
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .is_ok()
    });
    nginx
}

fn through_nginx(nginx: &Nginx, path: &str, headers: &[(&str, String)]) -> Response {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    raw(nginx.addr, &request).unwrap_or_else(|e| {
        let log = std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default();
        panic!("nginx: {e}\n{log}")
    })
}

#[test]
fn nginx_auth_request_in_front_of_the_backend() {
    if !common::installed(NGINX, "nginx-light") {
        return;
    }
    let world = World::new();
    let (gw, authz) = start(&world);
    let nginx = start_nginx(authz, world.echo.addr());
    let token = world.valid_token();

    // The proxy's forwarded facts, for comparison.
    world.echo.clear();
    assert_eq!(gw.get(INCOME, Some(&token), &[]).status, 200);
    let expected = consent_headers(&world.echo.seen()[0].headers);

    world.echo.clear();
    let spoof = ("X-Consent-Subject", "05917596738".to_string());
    let spoof_meta = ("X-Consent-Metadata-Inntektsaar", "1999".to_string());
    let r = through_nginx(&nginx, INCOME, &[bearer(&token), spoof, spoof_meta]);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(consent_headers(&seen[0].headers), expected);
    assert_eq!(seen[0].header_all("x-consent-subject"), vec![PERSON]);
    assert!(seen[0].header("x-consent-gateway-authz").is_none());
    assert_eq!(seen[0].uri, INCOME);

    // Denials: the client gets the gateway's status and problem+json.
    world.echo.clear();
    let spoof = ("X-Consent-Subject", PERSON.to_string());
    let cases = [
        (
            through_nginx(&nginx, INCOME, std::slice::from_ref(&spoof)),
            401,
            "missing_token",
        ),
        (
            through_nginx(&nginx, "/income/05917596738/2025", &[bearer(&token)]),
            403,
            "consent_subject_mismatch",
        ),
        (
            through_nginx(&nginx, "/nowhere", &[bearer(&token)]),
            404,
            "no_route",
        ),
        (
            through_nginx(&nginx, INCOME, &[bearer("abc.def")]),
            401,
            "malformed_token",
        ),
        (
            through_nginx(
                &nginx,
                "/income/17839116535%2F..%2F/2025",
                &[bearer(&token)],
            ),
            400,
            "invalid_request",
        ),
    ];
    for (response, status, reason) in cases {
        assert_eq!(response.status, status, "{reason}: {response:?}");
        assert_eq!(response.reason(), reason, "{response:?}");
        assert!(
            response
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/problem+json")),
            "{response:?}"
        );
    }
    assert!(
        world.echo.seen().is_empty(),
        "a denied request reached the backend"
    );
    let missing = through_nginx(&nginx, INCOME, &[]);
    assert_eq!(
        missing.header("www-authenticate"),
        Some(r#"Bearer realm="consent-gateway""#)
    );
}

#[test]
fn a_new_shared_secret_is_taken_on_reload() {
    let world = World::new();
    let (gw, authz) = start(&world);
    let token = world.valid_token();
    let new_secret = "n3w-s3cret-n3w-s3cret";
    let with = |value: &str| {
        let headers = [
            ("X-Consent-Gateway-Authz", value.to_string()),
            bearer(&token),
        ];
        traefik(authz, "GET", INCOME, &headers).status
    };
    assert_eq!(with(SECRET), 200);
    assert_eq!(with(new_secret), 403);
    let before = gw.generation();
    let file = gw.dir.path().join("authz-secret");
    std::fs::write(&file, format!("{new_secret}\n")).expect("write secret");
    eventually(20, "the new secret's generation", || {
        gw.generation() > before
    });
    assert_eq!(with(new_secret), 200);
    assert_eq!(with(SECRET), 403, "the old secret no longer opens");
}

/// The gRPC check of `target` (Envoy's shape), the token and `extra`
/// headers in the original request.
fn grpc_check(
    id: &str,
    method: &str,
    target: &str,
    token: Option<&str>,
    extra: &[(&str, String)],
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let mut headers: Vec<(&str, String)> = token.map(bearer).into_iter().collect();
    headers.extend_from_slice(extra);
    grpc::check_request(Some(grpc::http_request(id, method, target, &headers)))
}

#[test]
fn grpc_allow_sets_the_proxy_headers_and_removes_client_copies() {
    let world = World::new();
    let (gw, _, addr) = start_both(&world);
    let token = world.valid_token();
    let mut client = grpc::client(&world.rt, addr);

    // What the proxy forwards for the same request.
    world.echo.clear();
    assert_eq!(gw.get(INCOME, Some(&token), &[]).status, 200);
    let proxied = consent_headers(&world.echo.seen()[0].headers);
    assert!(proxied.len() >= 10, "{proxied:?}");

    let spoofs = [
        ("X-Consent-Subject", OTHER_PERSON.to_string()),
        ("X-Consent-Metadata-Inntektsaar", "1999".to_string()),
        ("X-Consent-Bogus", "1".to_string()),
        ("X-Consent-Gateway-Authz", SECRET.to_string()),
        ("X-Kept", "yes".to_string()),
    ];
    world.echo.clear();
    let check = grpc_check("grpc-allow-1", "GET", INCOME, Some(&token), &spoofs);
    let answer = grpc::call(&world.rt, &mut client, check, Some(SECRET)).expect("check");
    let ok = grpc::ok(&answer).unwrap_or_else(|| panic!("not an allow: {answer:?}"));
    assert_eq!(grpc::headers_to_set(ok), proxied);
    for option in &ok.headers {
        // OVERWRITE_IF_EXISTS_OR_ADD: every client copy is replaced.
        assert_eq!(option.append_action, 2, "{option:?}");
    }
    let remove = &ok.headers_to_remove;
    for name in [
        "x-consent-bogus",
        "x-consent-gateway-authz",
        "authorization",
    ] {
        assert!(remove.iter().any(|n| n == name), "{name}: {remove:?}");
    }
    assert!(!remove.iter().any(|n| n == "x-kept"));
    // A name the allow sets is not removed (Envoy removes after setting).
    assert!(
        !remove.iter().any(|n| n == "x-consent-subject"),
        "{remove:?}"
    );

    // The original request as Envoy would forward it after this answer
    // carries exactly the proxy's X-Consent-* values, no client copy.
    let mut original = spoofs.to_vec();
    original.push(bearer(&token));
    let forwarded = grpc::apply_like_envoy(ok, &original);
    assert_eq!(consent_headers(&forwarded), proxied);
    assert!(!forwarded.iter().any(|(n, _)| n == "authorization"));
    assert!(forwarded.iter().any(|(n, v)| n == "x-kept" && v == "yes"));
    assert!(
        world.echo.seen().is_empty(),
        "a check never reaches the upstream"
    );

    assert_eq!(audit_line(&gw, "grpc-allow-1")["decision"], "allow");
    let checks = gw.series(
        "consent_gateway_authz_checks_total",
        &[("protocol", "grpc"), ("decision", "allow")],
    );
    assert_eq!(checks, Some(1.0));
}

/// (method, target, token, HTTP status, reason, google.rpc code)
type DenialCase<'a> = (&'a str, &'a str, Option<&'a str>, i32, &'a str, i32);

#[test]
fn grpc_denials_carry_the_proxy_status_body_and_headers() {
    let world = World::new();
    let (gw, _, addr) = start_both(&world);
    let token = world.valid_token();
    let expired = world.token(&world.spec().claims(World::now() - 7200));
    let mut client = grpc::client(&world.rt, addr);
    world.echo.clear();
    let cases: [DenialCase; 9] = [
        ("GET", INCOME, None, 401, "missing_token", 16),
        ("GET", INCOME, Some("abc.def"), 401, "malformed_token", 16),
        ("GET", INCOME, Some(&expired), 401, "token_expired", 16),
        (
            "GET",
            "/income/05917596738/2025",
            Some(&token),
            403,
            "consent_subject_mismatch",
            7,
        ),
        (
            "GET",
            "/income/17839116535/2024",
            Some(&token),
            403,
            "consent_metadata_mismatch",
            7,
        ),
        ("GET", "/nowhere", Some(&token), 404, "no_route", 12),
        ("POST", INCOME, Some(&token), 405, "method_not_allowed", 12),
        (
            "GET",
            "/income/17839116535%2F..%2F/2025",
            Some(&token),
            400,
            "invalid_request",
            3,
        ),
        (
            "GET",
            "/income/17839116535/2025?access_token=x",
            Some(&token),
            400,
            "invalid_request",
            3,
        ),
    ];
    for (n, (method, target, token, status, reason, code)) in cases.into_iter().enumerate() {
        let id = format!("grpc-deny-{n}");
        let check = grpc_check(&id, method, target, token, &[]);
        let answer = grpc::call(&world.rt, &mut client, check, Some(SECRET)).expect("check");
        assert_eq!(grpc::code(&answer), code, "{reason}: {answer:?}");
        let status_message = answer.status.as_ref().map(|s| s.message.as_str());
        assert_eq!(status_message, Some(reason));
        let denied = grpc::denied(&answer).unwrap_or_else(|| panic!("{reason}: {answer:?}"));
        assert_eq!(
            grpc::denied_status_reason(denied),
            (status, reason.to_string())
        );
        let content_type = grpc::denied_header(denied, "content-type");
        assert_eq!(content_type, Some("application/problem+json"), "{reason}");
        assert_eq!(
            grpc::denied_header(denied, "x-request-id"),
            Some(id.as_str())
        );
        assert!(grpc::denied_header(denied, "content-length").is_none());
        // The same request through the proxy: the same refusal headers.
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\n\
             Content-Length: 0\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let proxied = gw.raw(&format!("{request}\r\n"));
        assert_eq!(
            (proxied.status as i32, proxied.reason()),
            (status, reason.into())
        );
        for name in ["www-authenticate", "allow", "retry-after", "cache-control"] {
            let ours = grpc::denied_header(denied, name);
            assert_eq!(ours, proxied.header(name), "{reason}: {name}");
        }
        if reason == "missing_token" {
            let challenge = grpc::denied_header(denied, "www-authenticate");
            assert_eq!(challenge, Some(r#"Bearer realm="consent-gateway""#));
        }
        if status == 405 {
            assert_eq!(grpc::denied_header(denied, "allow"), Some("GET"));
        }
        assert_eq!(audit_line(&gw, &id)["reason"], reason, "{id}");
    }
    assert!(
        world.echo.seen().is_empty(),
        "a denied check reached the upstream"
    );
    let checks = gw.series(
        "consent_gateway_authz_checks_total",
        &[("protocol", "grpc"), ("decision", "deny")],
    );
    assert_eq!(checks, Some(9.0));
}

#[test]
fn grpc_without_the_secret_or_the_facts_nothing_is_allowed() {
    let world = World::new();
    let (_gw, _, addr) = start_both(&world);
    let token = world.valid_token();
    let mut client = grpc::client(&world.rt, addr);
    let good = || grpc_check("grpc-secret", "GET", INCOME, Some(&token), &[]);
    let allowed = grpc::call(&world.rt, &mut client, good(), Some(SECRET)).expect("check");
    assert!(
        grpc::ok(&allowed).is_some(),
        "the control case: {allowed:?}"
    );

    // Missing, wrong or short secret; the secret in the original request
    // (where a client could put it) rather than the call's metadata.
    let in_original = grpc_check(
        "grpc-secret",
        "GET",
        INCOME,
        Some(&token),
        &[("X-Consent-Gateway-Authz", SECRET.to_string())],
    );
    let refused = [
        (good(), None),
        (good(), Some("s3cret-s3cret-s3creX")),
        (good(), Some("s3cret")),
        (in_original, None),
    ];
    for (check, secret) in refused {
        let answer = grpc::call(&world.rt, &mut client, check, secret).expect("check");
        assert_eq!(grpc::code(&answer), 7, "{secret:?}: {answer:?}");
        let denied = grpc::denied(&answer).expect("a denial");
        let expected = (403, "consumer_not_allowed".to_string());
        assert_eq!(grpc::denied_status_reason(denied), expected);
    }

    // Missing original-request facts: 400 invalid_request.
    let http =
        |method: &str, target: &str| grpc::http_request("m", method, target, &[bearer(&token)]);
    let malformed = [
        grpc::check_request(None),
        envoy_types::pb::envoy::service::auth::v3::CheckRequest::default(),
        grpc::check_request(Some(http("GET", ""))),
        grpc::check_request(Some(http("", INCOME))),
        grpc::check_request(Some(http("GET", "income"))),
    ];
    for check in malformed {
        let answer = grpc::call(&world.rt, &mut client, check, Some(SECRET)).expect("check");
        assert_eq!(grpc::code(&answer), 3, "{answer:?}");
        let denied = grpc::denied(&answer).expect("a denial");
        let expected = (400, "invalid_request".to_string());
        assert_eq!(grpc::denied_status_reason(denied), expected);
    }

    // A path that is not UTF-8 (proto3 strings must be): no client built
    // from the protos can send it, so the call is encoded by hand. The
    // listener cannot decode it: an RPC error, which Envoy denies.
    let bytes = prost::Message::encode_to_vec(&good());
    let at = bytes
        .windows(PERSON.len())
        .position(|w| w == PERSON.as_bytes())
        .expect("the path in the encoding");
    let mut broken = bytes.clone();
    broken[at] = 0xff;
    match grpc::call_raw(&world.rt, addr, broken, Some(SECRET)) {
        Err(status) => assert_ne!(status.code(), tonic::Code::Ok),
        Ok(answer) => assert!(grpc::ok(&answer).is_none(), "{answer:?}"),
    }
    // The same bytes, unbroken, are allowed: the test can fail.
    let answer = grpc::call_raw(&world.rt, addr, bytes, Some(SECRET)).expect("raw check");
    assert!(grpc::ok(&answer).is_some(), "{answer:?}");
}

#[test]
fn grpc_reads_the_body_envoy_sends_and_shares_the_rate_limit() {
    let world = World::new();
    let (_gw, authz, addr) = start_both(&world);
    let token = world.valid_token();
    let mut client = grpc::client(&world.rt, addr);
    let json = ("content-type", "application/json".to_string());
    let search = |body: &str, extra: &[(&str, String)]| {
        let mut headers = vec![bearer(&token), json.clone()];
        headers.extend_from_slice(extra);
        let mut http = grpc::http_request("grpc-body", "POST", "/people/search", &headers);
        http.body = body.to_string();
        grpc::check_request(Some(http))
    };
    let decide = |client: &mut grpc::Client, check| {
        let answer = grpc::call(&world.rt, client, check, Some(SECRET)).expect("check");
        match grpc::denied(&answer) {
            Some(denied) => grpc::denied_status_reason(denied),
            None if grpc::ok(&answer).is_some() => (200, "ok".to_string()),
            None => panic!("neither: {answer:?}"),
        }
    };
    let mine = format!(r#"{{"person":{{"fnr":"{PERSON}"}}}}"#);
    let other = format!(r#"{{"person":{{"fnr":"{OTHER_PERSON}"}}}}"#);
    assert_eq!(decide(&mut client, search(&mine, &[])), (200, "ok".into()));
    let mismatch = (403, "consent_subject_mismatch".to_string());
    assert_eq!(decide(&mut client, search(&other, &[])), mismatch);
    let partial = [("x-envoy-auth-partial-body", "true".to_string())];
    let too_large = (413, "body_too_large".to_string());
    assert_eq!(decide(&mut client, search(&mine, &partial)), too_large);
    let padded = format!(
        r#"{{"pad":"{}","person":{{"fnr":"{PERSON}"}}}}"#,
        "x".repeat(64)
    );
    assert_eq!(decide(&mut client, search(&padded, &[])), too_large);
    // No body sent (Envoy without with_request_body): never allowed unread.
    let unread = (400, "invalid_request".to_string());
    assert_eq!(decide(&mut client, search("", &[])), unread);

    // One rate limit for every door: the gRPC check uses the one request
    // the HTTP door then finds spent.
    let limited = format!("/limited/{PERSON}");
    let check = grpc_check("grpc-limited", "GET", &limited, Some(&token), &[]);
    let answer = grpc::call(&world.rt, &mut client, check, Some(SECRET)).expect("check");
    let ok = grpc::ok(&answer).expect("the first request is within the limit");
    let names: Vec<&str> = ok
        .response_headers_to_add
        .iter()
        .filter_map(|o| o.header.as_ref().map(|h| h.key.as_str()))
        .collect();
    assert!(names.contains(&"ratelimit"), "{names:?}");
    let over_http = traefik(authz, "GET", &limited, &[secret(), bearer(&token)]);
    assert_eq!(
        (over_http.status, over_http.reason()),
        (429, "rate_limited".into())
    );
    assert!(over_http.header("ratelimit").is_some(), "{over_http:?}");
    let check = grpc_check("grpc-limited-2", "GET", &limited, Some(&token), &[]);
    let answer = grpc::call(&world.rt, &mut client, check, Some(SECRET)).expect("check");
    assert_eq!(grpc::code(&answer), 8, "RESOURCE_EXHAUSTED: {answer:?}");
    let denied = grpc::denied(&answer).expect("a denial");
    assert_eq!(
        grpc::denied_status_reason(denied),
        (429, "rate_limited".into())
    );
    assert!(
        grpc::denied_header(denied, "retry-after").is_some(),
        "{denied:?}"
    );
    assert!(grpc::denied_header(denied, "ratelimit-policy").is_some());
}

#[test]
fn sigterm_closes_grpc_connections_gracefully_and_exits() {
    let world = World::new();
    let authz = free_addr();
    let grpc_addr = free_addr();
    let template = CONFIG
        .replace("{authz}", &authz.to_string())
        .replace("{grpc}", &grpc_addr.to_string());
    let files = [("authz-secret", format!("{SECRET}\n"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, c)| (*n, c.as_str())).collect();
    // A grace period longer than the wait below: the exit must come from
    // the connections closing, not from the period running out.
    let mut gw = world.spawn_custom(
        &template,
        &files,
        &["--grace-period", "120"],
        &|dir, text| {
            let path = dir.join("gateway.yaml");
            std::fs::write(&path, text).expect("write config");
            path
        },
    );
    wait_ready(&gw);
    eventually(20, "the gRPC authz listener", || {
        std::net::TcpStream::connect(grpc_addr).is_ok()
    });
    let token = world.valid_token();
    // A client that keeps its HTTP/2 connection open, as Envoy does.
    let mut client = grpc::client(&world.rt, grpc_addr);
    let check = grpc_check("grpc-term", "GET", INCOME, Some(&token), &[]);
    let answer = grpc::call(&world.rt, &mut client, check, Some(SECRET)).expect("check");
    assert!(grpc::ok(&answer).is_some());
    gw.signal("TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = gw.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running with a gRPC connection open: {}",
            gw.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {}", gw.stderr());
    drop(client);
}

#[test]
fn grpc_connections_beyond_the_limit_are_closed() {
    let world = World::new();
    let authz = free_addr();
    let grpc_addr = free_addr();
    let template = CONFIG
        .replace(
            "  threads: 1\n",
            "  threads: 1\n  limits:\n    max_connections: 1\n",
        )
        .replace("{authz}", &authz.to_string())
        .replace("{grpc}", &grpc_addr.to_string());
    let _gw = world.start_with(&template, &[("authz-secret", &format!("{SECRET}\n"))]);
    let token = world.valid_token();
    let check = || grpc_check("grpc-limit", "GET", INCOME, Some(&token), &[]);
    let mut first = None;
    eventually(20, "the gRPC authz listener", || {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"));
        let connected = world.rt.block_on(endpoint.expect("endpoint").connect());
        first = connected.ok().map(grpc::Client::new);
        first.is_some()
    });
    let mut first = first.expect("connected");
    let answer = grpc::call(&world.rt, &mut first, check(), Some(SECRET)).expect("first");
    assert!(grpc::ok(&answer).is_some());
    // A second connection while the first is open: closed, never answered.
    let endpoint = tonic::transport::Channel::from_shared(format!("http://{grpc_addr}"));
    let second = world.rt.block_on(async {
        let channel = endpoint.expect("endpoint").connect().await?;
        let mut client = grpc::Client::new(channel);
        let mut request = tonic::Request::new(check());
        request
            .metadata_mut()
            .insert(grpc::SECRET_METADATA, SECRET.parse().expect("metadata"));
        client
            .check(request)
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    assert!(second.is_err(), "a second connection was served");
    // The first still is.
    let answer = grpc::call(&world.rt, &mut first, check(), Some(SECRET)).expect("first again");
    assert!(grpc::ok(&answer).is_some());
}
