//! Security review regressions through real HTTP: request smuggling and
//! parser tricks, Host and request-target tricks, header aliases of bound
//! values, and `report_only` never leaking verified headers. Each test also
//! proves what the upstream did (or did not) receive.

mod common;

use common::*;

const CONFIG: &str = r#"
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
  - name: income
    host: api.example.no
    path: /income/{fnr}
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
  - name: by-header
    host: api.example.no
    path: /person
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        header: X-Person-Id
  - name: shadow
    host: shadow.example.no
    path: /income/{fnr}
    upstream: echo
    issuers: [test]
    mode: report_only
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
  - name: public
    path: /{*rest}
    upstream: echo
    auth: none
"#;

fn consent_headers(seen: &consent_gateway::support::echo::SeenRequest) -> Vec<String> {
    seen.headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| {
            let folded: String = n
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            folded.starts_with("x-consent-")
        })
        .collect()
}

#[test]
fn a_host_header_that_names_no_host_is_refused() {
    let world = World::new();
    let gw = world.start(CONFIG);
    // A backend such as nginx reads `api.example.no:abc` as `api.example.no`
    // (everything after `:` is the port): routing it to the host-less public
    // route would hand the consent route's vhost an unchecked request.
    for host in [
        "api.example.no:abc",
        "api.example.no:80:80",
        "api.example.no/income",
        "api.example.no,evil.example",
        "api.example.no;x",
        "[api.example.no]",
        "[::1",
        "[::1]x",
        "api.example.no\\x",
    ] {
        world.echo.clear();
        let r = gw.raw(&format!(
            "GET /income/{PERSON} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 400, "{host}");
        assert!(world.echo.seen().is_empty(), "{host} reached the upstream");
    }
    // Real host spellings still route by host: case, port, trailing dot.
    for host in [
        "API.Example.NO",
        "api.example.no:8080",
        "api.example.no.:80",
    ] {
        let r = gw.raw(&format!(
            "GET /income/{PERSON} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.reason(), "missing_token", "{host}");
    }
    world.echo.clear();
    for host in [
        "[::1]:8080",
        "127.0.0.1",
        "other.example",
        "under_score.example:1",
    ] {
        let r = gw.raw(&format!(
            "GET /x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 200, "{host}");
    }
    assert_eq!(world.echo.seen().len(), 4);
}

#[test]
fn absolute_form_targets_never_reach_a_route_unchecked() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    for (target, host) in [
        // Host and target agree: refused (not origin-form), never routed.
        (
            format!("http://api.example.no/income/{PERSON}"),
            "api.example.no",
        ),
        // The target names the consent host, Host the public one.
        (
            format!("http://api.example.no/income/{PERSON}"),
            "other.example",
        ),
        (
            format!("http://other.example/income/{PERSON}"),
            "api.example.no",
        ),
        ("*".to_string(), "api.example.no"),
    ] {
        let r = gw.raw(&format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 400, "{target} with Host {host}");
    }
    assert!(world.echo.seen().is_empty());
}

#[test]
fn framing_tricks_never_smuggle_a_request_past_the_gateway() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let smuggled = format!(
        "GET /income/{OTHER_PERSON} HTTP/1.1\r\nHost: api.example.no\r\nX-Consent-Subject: {OTHER_PERSON}\r\n\r\n"
    );
    // CL.TE: Transfer-Encoding wins (RFC 9112 6.3), Content-Length is not
    // forwarded, and the connection closes after the answer, so the
    // smuggled request is never read as a second one.
    world.echo.clear();
    let r = raw(
        gw.addr,
        &format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
            5 + smuggled.len()
        ),
    )
    .expect("an answer");
    assert_ne!(r.status, 401, "the smuggled request was answered first");
    let seen = world.echo.seen();
    assert!(seen.len() <= 1);
    for s in &seen {
        assert_eq!(s.uri, "/x");
        assert!(s.header("content-length").is_none() || s.header("transfer-encoding").is_none());
        assert!(consent_headers(s).is_empty());
    }

    // Everything else is refused outright.
    world.echo.clear();
    for request in [
        format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        // Obsolete line folding hiding a second header.
        "GET /x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n X-Consent-Id: spoof\r\nConnection: close\r\n\r\n"
            .to_string(),
        // Whitespace before the colon.
        "GET /x HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\nConnection: close\r\n\r\nabcde"
            .to_string(),
        "GET /x HTTP/1.1\r\nHost: x\r\nX-Consent-Id : spoof\r\nConnection: close\r\n\r\n"
            .to_string(),
    ] {
        let r = gw.raw(&request);
        assert_eq!(r.status, 400, "{request}");
    }
    assert!(world.echo.seen().is_empty());
}

#[test]
fn a_bound_header_spelt_twice_is_an_invalid_request() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let token = world.valid_token();
    world.echo.clear();
    let r = gw.get("/person", Some(&token), &[("X-Person-Id", PERSON)]);
    assert_eq!(r.status, 200);
    assert_eq!(world.echo.seen().len(), 1);
    world.echo.clear();
    for alias in ["X_Person_Id", "x.person.id"] {
        let r = gw.get(
            "/person",
            Some(&token),
            &[("X-Person-Id", PERSON), (alias, OTHER_PERSON)],
        );
        assert_eq!(r.status, 400, "{alias}");
        assert_eq!(r.reason(), "invalid_request", "{alias}");
        let r = gw.get("/person", Some(&token), &[(alias, PERSON)]);
        assert_eq!(r.status, 403, "{alias} alone is no subject");
    }
    assert!(world.echo.seen().is_empty());
}

#[test]
fn report_only_never_forwards_consent_headers_on_a_shadow_deny() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let token = world.valid_token();
    let spoof = [
        ("X-Consent-Subject", OTHER_PERSON),
        ("X_Consent_Id", "spoof"),
        ("x.consent.from", "spoof"),
    ];
    let shadow = |path: &str, token: Option<&str>| {
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: shadow.example.no\r\nConnection: close\r\n");
        if let Some(t) = token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (n, v) in spoof {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        gw.raw(&req)
    };

    // Wrong person, and no token at all: proxied, with no X-Consent-* header.
    world.echo.clear();
    assert_eq!(
        shadow(&format!("/income/{OTHER_PERSON}"), Some(&token)).status,
        200
    );
    assert_eq!(shadow(&format!("/income/{OTHER_PERSON}"), None).status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert!(
            consent_headers(s).is_empty(),
            "leaked: {:?}",
            consent_headers(s)
        );
    }
    assert_eq!(
        gw.metric(r#"consent_gateway_requests_total{decision="shadow_deny",reason="consent_subject_mismatch",route="shadow"}"#),
        Some(1.0)
    );

    // Allowed: only the gateway's own values.
    world.echo.clear();
    assert_eq!(
        shadow(&format!("/income/{PERSON}"), Some(&token)).status,
        200
    );
    let seen = world.echo.seen();
    assert_eq!(seen[0].header("x-consent-subject"), Some(PERSON));
    assert!(!consent_headers(&seen[0]).contains(&"x_consent_id".to_string()));
    assert_ne!(seen[0].header("x-consent-id"), Some("spoof"));

    // report_only does not relax 400: a bound value given twice.
    world.echo.clear();
    let r = gw.raw(&format!(
        "GET /income/{PERSON}?access_token=x HTTP/1.1\r\nHost: shadow.example.no\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 400);
    assert!(world.echo.seen().is_empty());
}

#[test]
fn a_connection_header_the_proxy_cannot_honour_is_400_not_a_dropped_connection() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    for connection in [
        "close, x-forwarded-for",
        "close, Host",
        "close, X-Forwarded-Host",
        "close, x-forwarded-proto",
        "close, \"x-secret\"",
        "close, :authority",
        "close, a, b, c, d, e, f, g, h, i",
    ] {
        let r = raw(
            gw.addr,
            &format!("GET /x HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n"),
        )
        .unwrap_or_else(|e| panic!("{connection}: no answer ({e})"));
        assert_eq!(r.status, 400, "{connection}");
        assert_eq!(r.reason(), "invalid_request", "{connection}");
    }
    assert!(world.echo.seen().is_empty());
    // Ordinary nominations still pass (and are stripped).
    let r =
        gw.raw("GET /x HTTP/1.1\r\nHost: x\r\nConnection: close, X-Secret\r\nX-Secret: s\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(world.echo.seen()[0].header("x-secret"), None);
}

#[test]
fn a_dot_segment_with_parameters_never_reaches_a_servlet_container() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    // Tomcat, Jetty and Spring strip `;...` from each segment and then
    // resolve `..`: `/x/..;/income/B` would be served as `/income/B` under
    // the public route, without the consent route's checks.
    for path in [
        format!("/x/..;/income/{OTHER_PERSON}"),
        format!("/x/..;jsessionid=1/income/{OTHER_PERSON}"),
        format!("/x/%2e%2e;/income/{OTHER_PERSON}"),
        format!("/income/.;/{OTHER_PERSON}"),
    ] {
        let r = gw.get(&path, None, &[]);
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(r.reason(), "invalid_request", "{path}");
    }
    assert!(world.echo.seen().is_empty());
    // `;` elsewhere is an ordinary character.
    assert_eq!(gw.get("/x/a;b=c/d", None, &[]).status, 200);
    assert_eq!(world.echo.seen()[0].uri, "/x/a;b=c/d");
}

#[test]
fn non_ascii_request_targets_are_answered_and_never_forwarded_mangled() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    let mut statuses = Vec::new();
    for target in [
        &b"/x/\xff"[..],
        b"/x/\xc3\xa6",
        b"/x/\xef\xbf\xbd",
        b"/x?q=\xff",
    ] {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let r = raw_bytes(gw.addr, &request);
        statuses.push(r.map(|r| r.status).ok());
    }
    // Invalid UTF-8 is refused (a lossy U+FFFD would be another path);
    // valid UTF-8 is matched and forwarded byte for byte.
    assert_eq!(statuses, vec![Some(400), Some(200), Some(200), Some(400)]);
    let uris: Vec<String> = world.echo.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(
        uris,
        vec!["/x/\u{e6}".to_string(), "/x/\u{fffd}".to_string()]
    );
    // The gateway still answers afterwards.
    assert_eq!(gw.get("/x/y", None, &[]).status, 200);
}
