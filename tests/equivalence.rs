//! SPEC section 13, "One decision": the same requests, well-formed and
//! malformed, sent through every door that decides (the proxy, and
//! `explain` on the same configuration file) give the same decision and
//! reason. The proxy's side is read from its own audit line (matched by
//! `X-Request-Id`) and from what the echo upstream saw; `explain`'s from its
//! printed decision; the HTTP authorization listener's (asked as nginx
//! `auth_request` asks) and the gRPC one's (asked as Envoy's ext_authz v3
//! client asks, by the generated client) from their answers and their own
//! audit lines.

mod common;
#[path = "common/grpc.rs"]
mod grpc;

use common::*;
use consent_gateway::dev_issuer::DevIssuer;

const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  authz:
    listen: "{authz}"
    grpc_listen: "{grpc}"
    original_request: nginx
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
    jwks_min_refresh: 1s
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
  - name: by-header
    path: /people/income
    methods: [GET]
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { header: X-Person-Id }
  - name: codes
    path: /codes/{*rest}
    methods: [GET]
    upstream: echo
    auth: token
    issuers: [test]
    consumers:
      allow: ["0192:999999999"]
  - name: shadow
    path: /shadow/{fnr}
    methods: [GET]
    upstream: echo
    issuers: [test]
    mode: report_only
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { path_param: fnr }
  - name: open
    path: /open
    upstream: echo
    auth: none
  - name: records-read
    path: /records/{fnr}
    methods: [GET]
    upstream: echo
    auth: none
  - name: records-write
    path: /records/{person}
    methods: [POST]
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { path_param: person }
audit:
  personal_data: masked
"#;

/// One request as every door gets it.
struct Case {
    name: &'static str,
    method: &'static str,
    /// Path and query, exactly as sent.
    target: &'static str,
    token: Option<String>,
    /// Extra headers (a second `Host` included, when a case needs one).
    headers: Vec<(&'static str, String)>,
    /// What every door must decide: `allow`, `deny` or `shadow_deny`, and
    /// the reason (`ok` on allow).
    expect: (&'static str, &'static str),
}

/// The decision as one door reports it.
#[derive(Debug, PartialEq, Eq)]
struct Decided {
    decision: String,
    reason: String,
}

fn cases(world: &World) -> Vec<Case> {
    let valid = world.valid_token();
    let now = World::now();
    let expired = world.token(&world.spec().claims(now - 7200));
    let stranger = DevIssuer::generate("not-in-the-jwks").expect("rsa key");
    let unknown_kid = stranger.sign(&world.spec().claims(now));
    let case = |name, method, target, token: Option<&String>, expect| Case {
        name,
        method,
        target,
        token: token.cloned(),
        headers: Vec::new(),
        expect,
    };
    let with = |mut case: Case, name: &'static str, value: &str| {
        case.headers.push((name, value.to_string()));
        case
    };
    let income = "/income/17839116535/2025";
    vec![
        case("allow", "GET", income, Some(&valid), ("allow", "ok")),
        case("no token", "GET", income, None, ("deny", "missing_token")),
        case(
            "another person",
            "GET",
            "/income/05917596738/2025",
            Some(&valid),
            ("deny", "consent_subject_mismatch"),
        ),
        case(
            "another year",
            "GET",
            "/income/17839116535/2024",
            Some(&valid),
            ("deny", "consent_metadata_mismatch"),
        ),
        case(
            "no route",
            "GET",
            "/nowhere",
            Some(&valid),
            ("deny", "no_route"),
        ),
        case(
            "method",
            "DELETE",
            income,
            Some(&valid),
            ("deny", "method_not_allowed"),
        ),
        case(
            "malformed token",
            "GET",
            income,
            Some(&"abc.def".to_string()),
            ("deny", "malformed_token"),
        ),
        case(
            "expired",
            "GET",
            income,
            Some(&expired),
            ("deny", "token_expired"),
        ),
        case(
            "unknown kid",
            "GET",
            income,
            Some(&unknown_kid),
            ("deny", "unknown_key"),
        ),
        case(
            "encoded slash",
            "GET",
            "/income/17839116535%2F..%2F/2025",
            Some(&valid),
            ("deny", "invalid_request"),
        ),
        case(
            "dot segments climb above the root",
            "GET",
            "/../income/17839116535/2025",
            Some(&valid),
            ("deny", "invalid_request"),
        ),
        case(
            "dot segments resolved before routing",
            "GET",
            "/codes/../income/17839116535/2025",
            Some(&valid),
            ("allow", "ok"),
        ),
        case(
            "access_token in the query",
            "GET",
            "/income/17839116535/2025?access_token=x",
            Some(&valid),
            ("deny", "invalid_request"),
        ),
        with(
            case(
                "two Host headers",
                "GET",
                income,
                Some(&valid),
                ("deny", "invalid_request"),
            ),
            "Host",
            "evil.example",
        ),
        with(
            case(
                "header-bound subject",
                "GET",
                "/people/income",
                Some(&valid),
                ("allow", "ok"),
            ),
            "X-Person-Id",
            PERSON,
        ),
        with(
            with(
                case(
                    "Connection names the bound header",
                    "GET",
                    "/people/income",
                    Some(&valid),
                    ("deny", "invalid_request"),
                ),
                "X-Person-Id",
                PERSON,
            ),
            "Connection",
            "X-Person-Id",
        ),
        with(
            case(
                "Connection names Host",
                "GET",
                "/open",
                None,
                ("deny", "invalid_request"),
            ),
            "Connection",
            "host",
        ),
        case(
            "not on the access list",
            "GET",
            "/codes/a",
            Some(&valid),
            ("deny", "consumer_not_allowed"),
        ),
        case(
            "report_only",
            "GET",
            "/shadow/05917596738",
            Some(&valid),
            ("shadow_deny", "consent_subject_mismatch"),
        ),
        case("auth none", "GET", "/open", None, ("allow", "ok")),
        case(
            "one path, GET open",
            "GET",
            "/records/05917596738",
            None,
            ("allow", "ok"),
        ),
        case(
            "one path, POST consented",
            "POST",
            "/records/05917596738",
            None,
            ("deny", "missing_token"),
        ),
        case(
            "one path, POST with the consent",
            "POST",
            "/records/17839116535",
            Some(&valid),
            ("allow", "ok"),
        ),
        case(
            "one path, POST for another person",
            "POST",
            "/records/05917596738",
            Some(&valid),
            ("deny", "consent_subject_mismatch"),
        ),
        case(
            "one path, a method neither lists",
            "PUT",
            "/records/17839116535",
            Some(&valid),
            ("deny", "method_not_allowed"),
        ),
    ]
}

/// The proxy's decision, from its audit line; checks that the upstream saw
/// the request exactly when the decision lets it through.
fn through_proxy(world: &World, gw: &Gateway, case: &Case, id: &str) -> Decided {
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\nX-Request-Id: {id}\r\n",
        case.method, case.target
    );
    if let Some(token) = &case.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in &case.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    world.echo.clear();
    let response = gw.raw(&request);
    let mut line = None;
    eventually(10, &format!("the audit line of {}", case.name), || {
        line = gw.audit_lines().into_iter().find(|l| l["request_id"] == id);
        line.is_some()
    });
    let line = line.unwrap_or_default();
    let decided = Decided {
        decision: line["decision"].as_str().unwrap_or("").to_string(),
        reason: line["reason"].as_str().unwrap_or("").to_string(),
    };
    let forwarded = decided.decision != "deny";
    let seen = world.echo.seen();
    assert_eq!(
        !seen.is_empty(),
        forwarded,
        "{}: the upstream saw the request exactly when forwarded",
        case.name
    );
    if forwarded {
        assert_eq!(response.status, 200, "{}: {response:?}", case.name);
    } else {
        assert!(response.status >= 400, "{}: {response:?}", case.name);
        assert_eq!(response.reason(), decided.reason, "{}", case.name);
    }
    decided
}

/// The HTTP authorization listener's decision, the check shaped as nginx
/// `auth_request` sends it (deploy/nginx/consent-authz-locations.conf).
fn through_authz(gw: &Gateway, authz: std::net::SocketAddr, case: &Case, id: &str) -> Decided {
    let mut request = format!(
        "GET /_consent_gateway_authz HTTP/1.0\r\nHost: api.example.no\r\nConnection: close\r\n\
         X-Original-URI: {}\r\nX-Original-Method: {}\r\nX-Request-Id: {id}\r\n",
        case.target, case.method
    );
    if let Some(token) = &case.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in &case.headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let response = raw(authz, &request).expect("authz check");
    let mut line = None;
    eventually(
        10,
        &format!("the authz audit line of {}", case.name),
        || {
            line = gw.audit_lines().into_iter().find(|l| l["request_id"] == id);
            line.is_some()
        },
    );
    let line = line.unwrap_or_default();
    let decided = Decided {
        decision: line["decision"].as_str().unwrap_or("").to_string(),
        reason: line["reason"].as_str().unwrap_or("").to_string(),
    };
    if decided.decision == "deny" {
        assert!(response.status >= 400, "{}: {response:?}", case.name);
        assert_eq!(response.reason(), decided.reason, "{}", case.name);
    } else {
        assert_eq!(response.status, 200, "{}: {response:?}", case.name);
    }
    decided
}

/// The gRPC authorization listener's decision, the check shaped as Envoy
/// fills `attributes.request.http` (a second `Host` as a `host` header
/// beside the `:authority`).
fn through_grpc(
    gw: &Gateway,
    rt: &tokio::runtime::Runtime,
    client: &mut grpc::Client,
    case: &Case,
    id: &str,
) -> Decided {
    let mut headers: Vec<(&str, String)> = Vec::new();
    if let Some(token) = &case.token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    headers.extend(case.headers.iter().cloned());
    let http = grpc::http_request(id, case.method, case.target, &headers);
    let answer = grpc::call(rt, client, grpc::check_request(Some(http)), None)
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut line = None;
    eventually(10, &format!("the gRPC audit line of {}", case.name), || {
        line = gw.audit_lines().into_iter().find(|l| l["request_id"] == id);
        line.is_some()
    });
    let line = line.unwrap_or_default();
    let decided = Decided {
        decision: line["decision"].as_str().unwrap_or("").to_string(),
        reason: line["reason"].as_str().unwrap_or("").to_string(),
    };
    if decided.decision == "deny" {
        assert_ne!(grpc::code(&answer), 0, "{}: {answer:?}", case.name);
        let denied = grpc::denied(&answer).expect("a denied response");
        let (status, reason) = grpc::denied_status_reason(denied);
        assert!(status >= 400, "{}: {answer:?}", case.name);
        assert_eq!(reason, decided.reason, "{}", case.name);
    } else {
        assert!(grpc::ok(&answer).is_some(), "{}: {answer:?}", case.name);
    }
    decided
}

/// `explain`'s decision on the same configuration file.
fn through_explain(gw: &Gateway, case: &Case) -> Decided {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"));
    command
        .arg("explain")
        .arg("-c")
        .arg(&gw.config_path)
        .args(["--method", case.method])
        .args(["--url", &format!("http://api.example.no{}", case.target)]);
    if let Some(token) = &case.token {
        command.args(["--token", token]);
    }
    if case.headers.iter().any(|(n, _)| *n == "Host") {
        // A second Host: the URL's and this one.
        command.args(["-H", "Host: api.example.no"]);
    }
    for (name, value) in &case.headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let out = command.output().expect("run explain");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("decision: "))
        .unwrap_or_else(|| panic!("{}: no decision in {text}", case.name));
    let (decision, rest) = line.split_once(" (").unwrap_or((line, ""));
    let reason = match decision {
        "allow" => "ok".to_string(),
        _ => rest.split([';', ')']).next().unwrap_or("").to_string(),
    };
    let expected_exit = if decision == "allow" { 0 } else { 1 };
    assert_eq!(
        out.status.code(),
        Some(expected_exit),
        "{}: {text}",
        case.name
    );
    Decided {
        decision: decision.to_string(),
        reason,
    }
}

#[test]
fn every_door_decides_alike() {
    let world = World::new();
    let authz = free_addr();
    let grpc_addr = free_addr();
    let gw = world.start(
        &CONFIG
            .replace("{authz}", &authz.to_string())
            .replace("{grpc}", &grpc_addr.to_string()),
    );
    eventually(20, "the authz listener", || {
        raw(
            authz,
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .is_ok()
    });
    eventually(20, "the gRPC authz listener", || {
        std::net::TcpStream::connect(grpc_addr).is_ok()
    });
    let mut client = grpc::client(&world.rt, grpc_addr);
    for (n, case) in cases(&world).iter().enumerate() {
        let id = format!("equivalence-{n}");
        let proxy = through_proxy(&world, &gw, case, &id);
        let explain = through_explain(&gw, case);
        let checked = through_authz(&gw, authz, case, &format!("{id}-authz"));
        let grpc_id = format!("{id}-grpc");
        let over_grpc = through_grpc(&gw, &world.rt, &mut client, case, &grpc_id);
        let expected = Decided {
            decision: case.expect.0.to_string(),
            reason: case.expect.1.to_string(),
        };
        assert_eq!(proxy, expected, "{}: the proxy", case.name);
        assert_eq!(explain, expected, "{}: explain", case.name);
        assert_eq!(checked, expected, "{}: the authz listener", case.name);
        assert_eq!(
            over_grpc, expected,
            "{}: the gRPC authz listener",
            case.name
        );
    }
    // A method group's 405 names the union of its methods.
    let refused = gw.raw(
        "PUT /records/17839116535 HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(refused.status, 405);
    assert_eq!(refused.header("allow"), Some("GET, POST"));
}
