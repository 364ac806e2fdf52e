//! Operations through the real binary: every SPEC section 9 metric with its
//! label values after mixed traffic, `/readyz` and `/status` (sections 8 and
//! 12), the audit log (section 10), `report_only` (section 4), graceful
//! shutdown on SIGTERM and pingora's zero-downtime upgrade.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use consent_gateway::dev_issuer::TokenSpec;
use serde_json::Value;

const ORG: &str = "302685991";

/// The consent route with the year in the path, a company route, a
/// report-only route, and two open routes to upstreams that fail
/// (`{upstream2}`, a closed port).
fn config() -> String {
    templates::consent_config(
        &templates::income_route(
            "/income/{fnr}/{year}",
            true,
            &[("inntektsaar", "{ path_param: year }")],
        ),
        templates::Around {
            upstreams: r#"  - name: flaky
    targets: ["{upstream2}"]
  - name: closed
    targets: ["127.0.0.1:1"]
"#,
            rest: r#"  - name: company
    path: /company/{orgno}
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: orgno
        types: [organization]
  - name: shadow
    path: /shadow/{fnr}/{year}
    methods: [GET]
    upstream: echo
    mode: report_only
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
  - name: flaky
    path: /flaky
    upstream: flaky
    auth: none
  - name: dead
    path: /dead
    upstream: closed
    auth: none
audit:
  personal_data: masked
"#,
            ..Default::default()
        },
    )
}

fn income_path(fnr: &str) -> String {
    format!("/income/{fnr}/2025")
}

fn label_set<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    pairs.to_vec()
}

#[test]
fn metrics_after_mixed_traffic_name_every_series() {
    let world = World::new();
    let gw = world.start(&config());
    let token = world.valid_token();
    // The harness's readiness probes were refused before routing (404).
    let probes = gw
        .series(
            "consent_gateway_requests_total",
            &[("route", "-"), ("decision", "deny"), ("reason", "no_route")],
        )
        .unwrap_or(0.0);
    assert!(probes >= 1.0);

    // allow (twice: a cache miss, then a hit)
    assert_eq!(gw.get(&income_path(PERSON), Some(&token), &[]).status, 200);
    assert_eq!(gw.get(&income_path(PERSON), Some(&token), &[]).status, 200);
    // deny: no token; deny after verification; 405 on a known route
    assert_eq!(gw.get(&income_path(PERSON), None, &[]).status, 401);
    assert_eq!(
        gw.get(&income_path(OTHER_PERSON), Some(&token), &[]).status,
        403
    );
    let post = gw.raw(&format!(
        "POST {} HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        income_path(PERSON)
    ));
    assert_eq!(post.status, 405);
    // refused before a route is known
    assert_eq!(gw.get("/nowhere", None, &[]).status, 404);
    assert_eq!(gw.get("/flaky/%2F", None, &[]).status, 400);
    // shadow_deny on a report_only route
    assert_eq!(
        gw.get(&format!("/shadow/{OTHER_PERSON}/2025"), Some(&token), &[])
            .status,
        200
    );
    // upstream classes: 5xx and error
    world.echo2.set_status(Some(503));
    assert_eq!(gw.get("/flaky", None, &[]).status, 503);
    assert_eq!(gw.get("/dead", None, &[]).status, 502);
    // a reload attempt
    gw.signal("HUP");
    eventually(10, "the reload is counted", || {
        gw.series(
            "consent_gateway_config_reloads_total",
            &[("outcome", "success")],
        ) == Some(1.0)
    });

    let body = gw.admin_get("/metrics").body;
    let expect = |name: &str, labels: &[(&str, &str)], value: f64| {
        assert_eq!(
            series_value(&body, name, &label_set(labels)),
            Some(value),
            "{name}{labels:?} in\n{body}"
        );
    };
    let requests = "consent_gateway_requests_total";
    expect(
        requests,
        &[("route", "income"), ("decision", "allow"), ("reason", "ok")],
        2.0,
    );
    expect(
        requests,
        &[
            ("route", "income"),
            ("decision", "deny"),
            ("reason", "missing_token"),
        ],
        1.0,
    );
    expect(
        requests,
        &[
            ("route", "income"),
            ("decision", "deny"),
            ("reason", "consent_subject_mismatch"),
        ],
        1.0,
    );
    expect(
        requests,
        &[
            ("route", "income"),
            ("decision", "deny"),
            ("reason", "method_not_allowed"),
        ],
        1.0,
    );
    expect(
        requests,
        &[("route", "-"), ("decision", "deny"), ("reason", "no_route")],
        probes + 1.0,
    );
    expect(
        requests,
        &[
            ("route", "-"),
            ("decision", "deny"),
            ("reason", "invalid_request"),
        ],
        1.0,
    );
    expect(
        requests,
        &[
            ("route", "shadow"),
            ("decision", "shadow_deny"),
            ("reason", "consent_subject_mismatch"),
        ],
        1.0,
    );
    // Upstream failures are allow/ok in requests_total, error in upstream_responses_total.
    expect(
        requests,
        &[("route", "dead"), ("decision", "allow"), ("reason", "ok")],
        1.0,
    );
    let upstream = "consent_gateway_upstream_responses_total";
    expect(upstream, &[("route", "income"), ("class", "2xx")], 2.0);
    expect(upstream, &[("route", "shadow"), ("class", "2xx")], 1.0);
    expect(upstream, &[("route", "flaky"), ("class", "5xx")], 1.0);
    expect(upstream, &[("route", "dead"), ("class", "error")], 1.0);
    // A denied request never reaches an upstream.
    assert_eq!(
        series_value(&body, upstream, &[("route", "-"), ("class", "error")]),
        None
    );
    let errors = "consent_gateway_http_errors_total";
    expect(errors, &[("kind", "no_route")], probes + 1.0);
    expect(errors, &[("kind", "invalid_request")], 1.0);
    let cache = "consent_gateway_token_cache_requests_total";
    // One token, verified once, then found three times (allow, deny, shadow).
    expect(cache, &[("result", "miss")], 1.0);
    expect(cache, &[("result", "hit")], 3.0);
    // Keys.
    assert!(
        series_value(
            &body,
            "consent_gateway_jwks_refresh_total",
            &[("issuer", "test"), ("outcome", "success")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    expect("consent_gateway_jwks_keys", &[("issuer", "test")], 1.0);
    let last_success = series_value(
        &body,
        "consent_gateway_jwks_last_success_timestamp_seconds",
        &[("issuer", "test")],
    )
    .unwrap_or(0.0);
    assert!(
        (last_success - World::now() as f64).abs() < 600.0,
        "{last_success}"
    );
    // Configuration.
    expect(
        "consent_gateway_config_reloads_total",
        &[("outcome", "success")],
        1.0,
    );
    expect(
        "consent_gateway_config_reloads_total",
        &[("outcome", "failure")],
        0.0,
    );
    expect("consent_gateway_config_generation", &[], 1.0);
    // Histograms.
    expect(
        "consent_gateway_request_duration_seconds_count",
        &[("route", "income")],
        5.0,
    );
    assert!(body.contains(
        "consent_gateway_request_duration_seconds_bucket{route=\"income\",le=\"+Inf\"} 5"
    ));
    expect(
        "consent_gateway_request_duration_seconds_count",
        &[("route", "-")],
        probes + 2.0,
    );
    let decisions = series_value(
        &body,
        "consent_gateway_decision_duration_seconds_count",
        &[],
    )
    .unwrap_or(0.0);
    assert!(decisions >= 5.0, "{decisions}");
    // Every SPEC section 9 name, with its type.
    for (name, kind) in [
        ("consent_gateway_requests_total", "counter"),
        ("consent_gateway_request_duration_seconds", "histogram"),
        ("consent_gateway_decision_duration_seconds", "histogram"),
        ("consent_gateway_upstream_responses_total", "counter"),
        ("consent_gateway_jwks_refresh_total", "counter"),
        ("consent_gateway_jwks_keys", "gauge"),
        (
            "consent_gateway_jwks_last_success_timestamp_seconds",
            "gauge",
        ),
        ("consent_gateway_config_reloads_total", "counter"),
        ("consent_gateway_config_generation", "gauge"),
        ("consent_gateway_token_cache_requests_total", "counter"),
        ("consent_gateway_http_errors_total", "counter"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} {kind}"
        );
    }
    // Labels are bounded: no personal data, path or token in the metrics.
    assert!(!body.contains(PERSON) && !body.contains(OTHER_PERSON));
    assert!(!body.contains("/income/"));
}

const TWO_ISSUERS: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
  - name: late
    issuer: "https://late.example/"
    jwks_uri: "LATE_JWKS"
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: income
    path: /income
    upstream: echo
    auth: token
    issuers: [test]
  - name: late
    path: /late
    upstream: echo
    auth: token
    issuers: [late]
"#;

fn is_rfc3339(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z'))
}

#[test]
fn readiness_waits_for_every_issuer_and_status_has_the_spec_shape() {
    let world = World::new();
    let closed = free_addr();
    let template = TWO_ISSUERS.replace("LATE_JWKS", &format!("http://{closed}/jwks"));
    let gw = world.spawn(&template, &[]);

    // Not ready while `late` has no keys; the body names it.
    eventually(30, "the admin listener answers", || {
        common::raw(
            gw.admin,
            "GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .is_ok_and(|r| r.status == 200)
    });
    eventually(30, "the fetch for `late` has failed", || {
        gw.status()["issuers"]["late"]["last_refresh_outcome"] == "failure"
            && gw.status()["issuers"]["test"]["last_refresh_outcome"] == "success"
    });
    let ready = gw.admin_get("/readyz");
    assert_eq!(ready.status, 503);
    assert!(ready
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let body = ready.json();
    assert_eq!(body["issuers_without_keys"], serde_json::json!(["late"]));
    assert!(!ready.body.contains("\"test\""), "{}", ready.body);
    assert_eq!(gw.admin_get("/healthz").status, 200);
    // Its routes fail closed with 503 keys_unavailable; the others serve.
    let late_token = world.token(
        &TokenSpec {
            iss: "https://late.example/".into(),
            ..TokenSpec::default()
        }
        .claims(World::now()),
    );
    let refused = gw.get("/late", Some(&late_token), &[]);
    assert_eq!(refused.status, 503);
    assert_eq!(refused.reason(), "keys_unavailable");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        gw.get("/income", Some(&world.valid_token()), &[]).status,
        200
    );

    // /status, SPEC section 12.
    let status = gw.status();
    assert_eq!(status["generation"], 1);
    assert!(is_rfc3339(&status["loaded_at"]), "{status}");
    let bytes = std::fs::read(&gw.config_path).expect("config bytes");
    let digest: String = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(status["config_sha256"], digest.as_str());
    assert_eq!(status["last_reload_error"], Value::Null);
    let test = &status["issuers"]["test"];
    assert_eq!(test["key_ids"], serde_json::json!(["test-key"]));
    assert!(is_rfc3339(&test["last_refresh"]), "{test}");
    assert_eq!(test["last_refresh_outcome"], "success");
    let late = &status["issuers"]["late"];
    assert_eq!(late["key_ids"], serde_json::json!([]));
    assert!(is_rfc3339(&late["last_refresh"]), "{late}");

    // Keys arrive (the issuer now points at a live JWKS): ready.
    gw.rewrite(&world, &TWO_ISSUERS.replace("LATE_JWKS", "{jwks}"));
    eventually(30, "ready once keys arrive", || {
        gw.admin_get("/readyz").status == 200
    });
    let status = gw.status();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["issuers"]["late"]["last_refresh_outcome"], "success");
    assert_eq!(
        status["issuers"]["late"]["key_ids"],
        serde_json::json!(["test-key"])
    );
    assert_eq!(gw.get("/late", Some(&late_token), &[]).status, 200);
}

fn audit_line(gw: &Gateway, request_id: &str) -> Value {
    let mut found = Vec::new();
    eventually(10, "the audit line is written", || {
        found = gw
            .audit_lines()
            .into_iter()
            .filter(|l| l["request_id"] == request_id)
            .collect();
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "one line per request: {found:?}");
    found.remove(0)
}

fn get_with_id(gw: &Gateway, path: &str, token: Option<&str>, id: &str) -> Response {
    let response = gw.get(path, token, &[("X-Request-Id", id)]);
    assert_eq!(response.header("x-request-id"), Some(id));
    response
}

#[test]
fn audit_lines_for_every_decided_request() {
    let world = World::new();
    let gw = world.start(&config());
    let token = world.valid_token();
    let org_token = world.token(
        &TokenSpec {
            from: Some(ORG.into()),
            resource: Some("demo-samtykke-inntekt".into()),
            ..world.spec()
        }
        .claims(World::now()),
    );

    assert_eq!(
        get_with_id(&gw, &income_path(PERSON), Some(&token), "a-allow").status,
        200
    );
    let allow = audit_line(&gw, "a-allow");
    for key in [
        "ts",
        "request_id",
        "route",
        "method",
        "path",
        "decision",
        "reason",
        "status",
        "consent_id",
        "consumer",
        "subject",
        "duration_ms",
    ] {
        assert!(allow.get(key).is_some(), "{key} missing: {allow}");
    }
    let ts = allow["ts"].as_str().unwrap_or_default();
    assert!(is_rfc3339(&allow["ts"]), "{ts}");
    assert_eq!(
        ts.len(),
        "2026-01-01T00:00:00.000Z".len(),
        "milliseconds: {ts}"
    );
    assert_eq!(allow["route"], "income");
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["path"], "/income/{fnr}/{year}");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["reason"], "ok");
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["consumer"], CONSUMER);
    assert_eq!(allow["subject"], "*********35");
    assert!(allow["consent_id"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(allow["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));

    // A denial after verification names consumer and (masked) subject.
    assert_eq!(
        get_with_id(&gw, &income_path(OTHER_PERSON), Some(&token), "a-deny").status,
        403
    );
    let deny = audit_line(&gw, "a-deny");
    assert_eq!(deny["decision"], "deny");
    assert_eq!(deny["reason"], "consent_subject_mismatch");
    assert_eq!(deny["status"], 403);
    assert_eq!(deny["consumer"], CONSUMER);
    assert_eq!(deny["subject"], "*********35");

    // Before verification: no identity.
    assert_eq!(
        get_with_id(&gw, &income_path(PERSON), None, "a-none").status,
        401
    );
    let none = audit_line(&gw, "a-none");
    assert_eq!(none["reason"], "missing_token");
    assert!(none.get("subject").is_none() && none.get("consumer").is_none());
    assert_eq!(none["path"], "/income/{fnr}/{year}");

    // Refused before routing, and an upstream failure.
    assert_eq!(
        get_with_id(&gw, &format!("/nowhere/{PERSON}"), None, "a-404").status,
        404
    );
    let no_route = audit_line(&gw, "a-404");
    assert_eq!(no_route["route"], "-");
    assert_eq!(no_route["reason"], "no_route");
    assert_eq!(no_route["status"], 404);
    assert_eq!(get_with_id(&gw, "/dead", None, "a-502").status, 502);
    let dead = audit_line(&gw, "a-502");
    assert_eq!(dead["route"], "dead");
    assert_eq!(dead["decision"], "allow");
    assert_eq!(dead["status"], 502);

    // Organisation numbers are never masked.
    assert_eq!(
        get_with_id(&gw, &format!("/company/{ORG}"), Some(&org_token), "a-org").status,
        200
    );
    let org = audit_line(&gw, "a-org");
    assert_eq!(org["subject"], ORG);
    assert_eq!(org["path"], "/company/{orgno}");

    // personal_data: clear, then omit (applied by reload).
    gw.rewrite(
        &world,
        &config().replace("personal_data: masked", "personal_data: clear"),
    );
    eventually(10, "clear applies", || gw.generation() == 2);
    get_with_id(&gw, &income_path(PERSON), Some(&token), "a-clear");
    assert_eq!(audit_line(&gw, "a-clear")["subject"], PERSON);
    gw.rewrite(
        &world,
        &config().replace("personal_data: masked", "personal_data: omit"),
    );
    eventually(10, "omit applies", || gw.generation() == 3);
    get_with_id(&gw, &income_path(PERSON), Some(&token), "a-omit");
    let omit = audit_line(&gw, "a-omit");
    assert!(omit.get("subject").is_none(), "{omit}");
    assert_eq!(omit["consumer"], CONSUMER);
    get_with_id(
        &gw,
        &format!("/company/{ORG}"),
        Some(&org_token),
        "a-omit-org",
    );
    assert!(audit_line(&gw, "a-omit-org").get("subject").is_none());

    // Never a token, never a concrete path, never a number in clear
    // outside the `clear` period.
    let stdout = gw.stdout();
    for secret in [&token, &org_token] {
        let signature = secret.rsplit('.').next().unwrap_or_default();
        assert!(!stdout.contains(signature));
        let payload = secret.split('.').nth(1).unwrap_or_default();
        assert!(!stdout.contains(payload));
    }
    assert!(!stdout.contains(&income_path(PERSON)));
    let lines = gw.audit_lines();
    let in_clear = lines
        .iter()
        .filter(|l| l.to_string().contains(PERSON))
        .count();
    assert_eq!(in_clear, 1, "only the `clear` line shows the number");
    assert!(!stdout.contains(OTHER_PERSON));
    // One line per request: every line parses, nothing else on stdout.
    assert_eq!(lines.len(), stdout.lines().count());
}

#[test]
fn report_only_proxies_would_be_denials_without_consent_headers() {
    let world = World::new();
    let gw = world.start(&config());
    let token = world.valid_token();
    let forged = [("X-Consent-Id", "forged"), ("X-Request-Id", "shadow-1")];

    // A would-be denial is proxied, stripped of every X-Consent-* header.
    world.echo.clear();
    let wrong = gw.get(
        &format!("/shadow/{OTHER_PERSON}/2025"),
        Some(&token),
        &forged,
    );
    assert_eq!(wrong.status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0]
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("x-consent-")),
        "{:?}",
        seen[0].headers
    );
    let line = audit_line(&gw, "shadow-1");
    assert_eq!(line["decision"], "shadow_deny");
    assert_eq!(line["reason"], "consent_subject_mismatch");
    assert_eq!(line["status"], 200);

    // No token at all: still proxied, counted with its reason.
    world.echo.clear();
    let anonymous = gw.get(
        &format!("/shadow/{PERSON}/2025"),
        None,
        &[("X-Request-Id", "shadow-2")],
    );
    assert_eq!(anonymous.status, 200);
    assert_eq!(world.echo.seen().len(), 1);
    assert_eq!(audit_line(&gw, "shadow-2")["reason"], "missing_token");

    // Allowed: the verified headers are set.
    world.echo.clear();
    let allowed = gw.get(&format!("/shadow/{PERSON}/2025"), Some(&token), &forged);
    assert_eq!(allowed.status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-consent-subject"), Some(PERSON));
    assert!(seen[0]
        .header("x-consent-id")
        .is_some_and(|v| v != "forged"));

    // 400, 404 and 405 are answered as usual and never proxied.
    world.echo.clear();
    let post = gw.raw(&format!(
        "POST /shadow/{PERSON}/2025 HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
    assert_eq!(gw.get("/shadow/only-one", Some(&token), &[]).status, 404);
    assert_eq!(
        gw.get(
            &format!("/shadow/{PERSON}/2025?access_token=x"),
            Some(&token),
            &[]
        )
        .status,
        400
    );
    assert_eq!(gw.get("/shadow/%2F/2025", Some(&token), &[]).status, 400);
    assert!(world.echo.seen().is_empty());

    let shadow = |reason: &str| {
        gw.series(
            "consent_gateway_requests_total",
            &[
                ("route", "shadow"),
                ("decision", "shadow_deny"),
                ("reason", reason),
            ],
        )
    };
    assert_eq!(shadow("consent_subject_mismatch"), Some(1.0));
    assert_eq!(shadow("missing_token"), Some(1.0));
    assert_eq!(
        gw.series(
            "consent_gateway_requests_total",
            &[("route", "shadow"), ("decision", "allow"), ("reason", "ok")],
        ),
        Some(1.0)
    );
    assert_eq!(
        gw.series(
            "consent_gateway_requests_total",
            &[
                ("route", "shadow"),
                ("decision", "deny"),
                ("reason", "method_not_allowed")
            ],
        ),
        Some(1.0)
    );
}

/// Waits for the process to exit; its exit status.
fn wait_exit(gw: &mut Gateway, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = gw.child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const OPEN: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 2
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: open
    path: /{*rest}
    upstream: echo
    auth: none
"#;

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let world = World::new();
    let mut gw = world.spawn_custom(OPEN, &[], &["--grace-period", "3"], &|dir, text| {
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    });
    wait_ready(&gw);
    world.echo.set_delay(Duration::from_millis(1000));
    world.echo.clear();
    let addr = gw.addr;
    let in_flight = std::thread::spawn(move || {
        common::raw(
            addr,
            "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    });
    eventually(10, "the request reached the upstream", || {
        world.echo.seen().iter().any(|s| s.uri == "/slow")
    });
    gw.signal("TERM");
    let response = in_flight
        .join()
        .expect("client thread")
        .expect("the in-flight request got an answer");
    assert_eq!(response.status, 200);
    let status = wait_exit(&mut gw, 30);
    assert!(status.success(), "{status:?}: {}", gw.stderr());
    assert!(gw.stderr().contains("SIGTERM"), "{}", gw.stderr());
}

const UPGRADE: &str = r#"
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
routes:
  - name: guarded
    path: /{*rest}
    upstream: echo
    auth: token
    issuers: [test]
"#;

#[test]
fn zero_downtime_upgrade_hands_the_listeners_over() {
    let world = World::new();
    let token = world.valid_token();
    let mut old = world.spawn_custom(UPGRADE, &[], &["--grace-period", "1"], &|dir, text| {
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    });
    wait_ready(&old);
    let addr = old.addr;

    // A client keeps sending for the whole hand-over.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = Arc::clone(&stop);
        let token = token.clone();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                outcomes.push(
                    common::raw(
                        addr,
                        &format!(
                            "GET /during HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                        ),
                    )
                    .map(|r| r.status),
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            outcomes
        })
    };

    // The new process gets its keys slowly: it must not take the listeners
    // over before it has them (that would answer 503 keys_unavailable).
    world.jwks.set_delay(Duration::from_millis(1500));
    // Then it waits on the upgrade socket for the old one's listeners.
    let sock = old.dir.path().join("upgrade.sock");
    let new_stderr = old.dir.path().join("new-stderr.log");
    let mut new = Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
        .args(["run", "--upgrade", "--grace-period", "1", "-c"])
        .arg(&old.config_path)
        .arg("--upgrade-sock")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(&new_stderr).expect("stderr file"),
        ))
        .spawn()
        .expect("spawn the new process");
    eventually(10, "the new process listens on the upgrade socket", || {
        sock.exists()
    });
    old.signal("QUIT");
    let status = wait_exit(&mut old, 60);
    assert!(status.success(), "{status:?}");

    // The old process is gone; the new one serves on the same addresses.
    let after = common::raw(
        addr,
        &format!(
            "GET /after HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    stop.store(true, Ordering::Relaxed);
    let outcomes = client.join().expect("client thread");
    let admin = common::raw(
        old.admin,
        "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    );
    let still_running = new.try_wait().expect("try_wait").is_none();
    let stderr = std::fs::read_to_string(&new_stderr).unwrap_or_default();
    let _ = new.kill();
    let _ = new.wait();
    assert!(still_running, "the new process exited: {stderr}");
    assert_eq!(after.expect("served after the upgrade").status, 200);
    let failed: Vec<_> = outcomes.iter().filter(|o| !matches!(o, Ok(200))).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the upgrade: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    assert!(outcomes.len() > 10);
    assert!(stderr.contains("ready to take over"), "{stderr}");
    // The admin listener was handed over too.
    assert_eq!(admin.expect("admin after the upgrade").status, 200);
}
