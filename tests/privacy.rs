//! SPEC section 13, "Logs and traces": the operational log at every level
//! holds no token, no national identity number and no bound value unless
//! `--log-personal-data`; `--log-format`; the audit line's personal data.

mod common;

use common::*;
use consent_gateway::dev_issuer::TokenSpec;

/// A metadata value bound from a header: distinctive, so a grep finds it.
const BOUND_YEAR: &str = "2025";
const BOUND_HEADER_VALUE: &str = "bound-marker-7QX";

/// The consent route with the year and a marker bound to headers.
fn config() -> String {
    templates::consent_config(
        &templates::income_bound_to_headers(),
        templates::Around {
            rest: "audit:\n  personal_data: masked\n",
            ..Default::default()
        },
    )
}

/// The audit lines of routed requests (readiness probes are `no_route`).
fn routed(gw: &Gateway) -> Vec<serde_json::Value> {
    gw.audit_lines()
        .into_iter()
        .filter(|l| l["route"] != "-")
        .collect()
}

fn spawn(world: &World, args: &[&str]) -> Gateway {
    let gw = world.spawn_custom(&config(), &[], args, &|dir, text| {
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, text).expect("write config");
        path
    });
    wait_ready(&gw);
    gw
}

fn token(world: &World) -> String {
    world.token(
        &TokenSpec {
            metadata: vec![
                ("inntektsaar".into(), BOUND_YEAR.into()),
                ("marker".into(), BOUND_HEADER_VALUE.into()),
            ],
            ..world.spec()
        }
        .claims(World::now()),
    )
}

/// One allowed and one denied consent request, with the bound headers.
fn drive(world: &World, gw: &Gateway, token: &str) {
    let headers = [
        ("X-Income-Year", BOUND_YEAR),
        ("X-Marker", BOUND_HEADER_VALUE),
    ];
    let allowed = gw.get(&format!("/income/{PERSON}"), Some(token), &headers);
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-consent-subject"), Some(PERSON));
    let denied = gw.get(&format!("/income/{OTHER_PERSON}"), Some(token), &headers);
    assert_eq!(denied.status, 403);
    assert_eq!(
        world.echo.seen().len(),
        1,
        "a denial never reaches the upstream"
    );
    eventually(10, "two audit lines", || gw.audit_lines().len() >= 2);
}

#[test]
fn trace_level_logs_hold_no_token_identity_number_or_bound_value() {
    let world = World::new();
    let gw = spawn(&world, &["--log-level", "trace", "--log-format", "json"]);
    let token = token(&world);
    drive(&world, &gw, &token);
    let (stderr, stdout) = (gw.stderr(), gw.stdout());
    assert!(!stderr.is_empty(), "the trace log is written");
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("token", token.as_str()),
        ("token signature", signature),
        ("identity number", PERSON),
        ("other identity number", OTHER_PERSON),
        ("bound header value", BOUND_HEADER_VALUE),
    ] {
        assert!(!stderr.contains(secret), "{what} in stderr:\n{stderr}");
        assert!(!stdout.contains(secret), "{what} in stdout:\n{stdout}");
    }
    // JSON: one object a line with the four fields.
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{line}"));
        for key in ["ts", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
    }
    // pingora's own lines are included.
    assert!(stderr.contains("\"target\":\"pingora"), "{stderr}");
}

#[test]
fn log_personal_data_lets_them_through_with_a_warning() {
    let world = World::new();
    let gw = spawn(
        &world,
        &[
            "--log-level",
            "debug",
            "--log-format",
            "text",
            "--log-personal-data",
        ],
    );
    let token = token(&world);
    drive(&world, &gw, &token);
    let stderr = gw.stderr();
    assert!(stderr.contains("--log-personal-data"), "{stderr}");
    assert!(
        stderr.contains(PERSON),
        "pingora's debug lines print the headers: {stderr}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_err(),
        "text: {first}"
    );
}

#[test]
fn log_format_is_validated() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
        .args(["--log-format", "xml", "check", "-c", "/nonexistent"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"));
}

/// A bare consent route and an open one; the audit's `personal_data` is
/// `AUDIT_MODE`.
fn audit_template() -> String {
    templates::consent_config(
        &templates::income_route("/income/{fnr}", false, &[]),
        templates::Around {
            rest: r#"  - name: open
    path: /open
    upstream: echo
    auth: none
audit:
  personal_data: AUDIT_MODE
  queue_lines: 8
"#,
            ..Default::default()
        },
    )
}

fn audit_config(mode: &str) -> String {
    let mut text = audit_template().replace("AUDIT_MODE", mode);
    if mode == "pseudonymized" {
        text.push_str("  pseudonym_key_file: pseudonym.key\n");
    }
    text
}

#[test]
fn pseudonymized_subjects_follow_the_key_file_across_a_reload() {
    let world = World::new();
    let key = "a-pseudonym-key-of-32-bytes-0001";
    let gw = world.start_with(&audit_config("pseudonymized"), &[("pseudonym.key", key)]);
    let token = world.valid_token();
    let path = format!("/income/{PERSON}");
    assert_eq!(gw.get(&path, Some(&token), &[]).status, 200);
    eventually(10, "one audit line", || routed(&gw).len() == 1);
    let first = routed(&gw)[0]["subject"].as_str().unwrap().to_string();
    assert_eq!(
        first,
        consent_gateway::audit::pseudonym(key.as_bytes(), PERSON)
    );
    assert!(!gw.stdout().contains(PERSON));

    let generation = gw.generation();
    let other_key = "another-pseudonym-key-32-bytes-2";
    let tmp = gw.dir.path().join(".key.tmp");
    std::fs::write(&tmp, other_key).unwrap();
    std::fs::rename(&tmp, gw.dir.path().join("pseudonym.key")).unwrap();
    eventually(10, "the reload", || gw.generation() > generation);
    assert_eq!(gw.get(&path, Some(&token), &[]).status, 200);
    eventually(10, "two audit lines", || routed(&gw).len() == 2);
    let second = routed(&gw)[1]["subject"].as_str().unwrap().to_string();
    assert_eq!(
        second,
        consent_gateway::audit::pseudonym(other_key.as_bytes(), PERSON)
    );
    assert_ne!(first, second);
}

#[test]
fn masked_audit_lines_carry_the_new_fields() {
    let world = World::new();
    let gw = world.start(&audit_config("masked"));
    let mut claims = TokenSpec {
        supplier: Some(SUPPLIER.into()),
        ..world.spec()
    }
    .claims(World::now());
    claims["client_id"] = "client-abc".into();
    claims["jti"] = "jti-xyz".into();
    let token = world.token(&claims);
    assert_eq!(
        gw.get(&format!("/income/{PERSON}"), Some(&token), &[])
            .status,
        200
    );
    eventually(10, "one audit line", || routed(&gw).len() == 1);
    let line = &routed(&gw)[0];
    assert_eq!(line["subject"], "*********35", "{line}");
    assert_eq!(line["client_id"], "client-abc", "{line}");
    assert_eq!(line["token_id"], "jti-xyz", "{line}");
    assert_eq!(line["resource"], "demo-samtykke-inntekt", "{line}");
    assert_eq!(line["supplier"], SUPPLIER, "{line}");
}

/// Starts the binary with stdout a pipe that is handed back unread.
fn spawn_piped(world: &World, template: &str) -> (std::process::Child, Gateway) {
    let gw = world.spawn(template, &[]);
    // Replace the file-backed child by one writing to a pipe.
    let mut gw = gw;
    let _ = gw.child.kill();
    let _ = gw.child.wait();
    let stderr = std::fs::File::create(&gw.stderr_path).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
        .args(["run", "-c"])
        .arg(&gw.config_path)
        .arg("--upgrade-sock")
        .arg(gw.dir.path().join("upgrade2.sock"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(stderr))
        .spawn()
        .expect("spawn");
    // The harness's own handle now points at a dead process; keep ours.
    let placeholder = std::process::Command::new("true").spawn().unwrap();
    gw.child = placeholder;
    wait_ready(&gw);
    (child, gw)
}

#[test]
fn a_blocked_stdout_never_stalls_requests_and_drops_are_counted() {
    let world = World::new();
    let (mut child, gw) = spawn_piped(&world, &audit_config("masked"));
    // Nobody reads the pipe: after the pipe buffer and the queue fill,
    // lines are dropped, and requests keep being answered.
    let mut served = 0;
    while gw
        .series("consent_gateway_audit_dropped_total", &[])
        .unwrap_or(0.0)
        < 1.0
    {
        for _ in 0..200 {
            assert_eq!(gw.get("/open", None, &[]).status, 200);
            served += 1;
        }
        assert!(served < 20_000, "no drop counted after {served} requests");
    }
    assert!(gw.status()["audit"]["dropped"].as_u64().unwrap() >= 1);
    assert_eq!(world.echo.seen().len(), served);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigterm_flushes_every_accepted_line() {
    let world = World::new();
    let gw = world.start(&audit_config("masked"));
    for i in 0..50 {
        let id = format!("flush-{i}");
        let r = gw.get("/open", None, &[("X-Request-Id", &id)]);
        assert_eq!(r.status, 200);
    }
    let mut gw = gw;
    gw.signal("TERM");
    let status = gw.child.wait().expect("wait");
    assert!(status.success(), "{status:?} {}", gw.stderr());
    let lines = routed(&gw);
    assert_eq!(lines.len(), 50, "{}", gw.stdout());
    assert_eq!(
        gw.stdout().lines().count(),
        gw.audit_lines().len(),
        "every line whole"
    );
}

#[test]
fn traceparent_is_honoured_or_started_and_forwarded() {
    let world = World::new();
    let gw = world.start(&audit_config("masked"));
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = gw.get(
        "/open",
        None,
        &[
            ("traceparent", incoming),
            ("tracestate", "vendor=abc"),
            ("X-Request-Id", "trace-honoured"),
        ],
    );
    assert_eq!(r.status, 200);
    let r = gw.get(
        "/open",
        None,
        &[
            ("traceparent", "00-zz-bad-01"),
            ("tracestate", "vendor=stale"),
            ("X-Request-Id", "trace-started"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 2);
    let honoured = seen[0].header("traceparent").unwrap();
    let parts: Vec<&str> = honoured.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(parts[2], "00f067aa0ba902b7", "the gateway's own span");
    assert_eq!(parts[3], "01");
    assert_eq!(seen[0].header("tracestate"), Some("vendor=abc"));
    let started = seen[1].header("traceparent").unwrap();
    assert_eq!(started.len(), 55, "{started}");
    assert!(started.starts_with("00-") && started.ends_with("-01"));
    assert_eq!(seen[1].header("tracestate"), None);
    // The audit lines name the trace.
    eventually(10, "two audit lines", || routed(&gw).len() == 2);
    let lines = routed(&gw);
    assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[1]["trace_id"].as_str(), Some(&started[3..35]));
}

#[test]
fn a_denied_request_has_a_trace_id_and_never_reaches_upstream() {
    let world = World::new();
    let gw = world.start(&audit_config("masked"));
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let r = gw.get(
        &format!("/income/{PERSON}"),
        None,
        &[("traceparent", incoming)],
    );
    assert_eq!(r.status, 401);
    assert!(world.echo.seen().is_empty());
    eventually(10, "one audit line", || routed(&gw).len() == 1);
    assert_eq!(
        routed(&gw)[0]["trace_id"],
        "0af7651916cd43dd8448eb211c80319c"
    );
}

#[test]
fn env_values_are_substituted_and_unset_ones_reported_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        r#"
server:
  listen: ["127.0.0.1:${CGW_TEST_PORT}"]
  threads: ${CGW_TEST_THREADS}
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "http://127.0.0.1:${CGW_TEST_UNSET_A}/jwks"
upstreams:
  - name: echo
    targets: ["${CGW_TEST_UPSTREAM}"]
routes:
  - name: open
    path: /open
    upstream: echo
    auth: none
    forward:
      preserve_host: ${CGW_TEST_UNSET_B}
"#,
    )
    .unwrap();
    let run = |unset: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"));
        cmd.args(["check", "-c"])
            .arg(&config)
            .env("CGW_TEST_PORT", "18080")
            .env("CGW_TEST_THREADS", "3")
            .env("CGW_TEST_UPSTREAM", "127.0.0.1:19999");
        if !unset {
            cmd.env("CGW_TEST_UNSET_A", "18081")
                .env("CGW_TEST_UNSET_B", "false");
        }
        cmd.output().expect("run check")
    };
    let bad = run(true);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("issuers[0].jwks_uri"), "{stderr}");
    assert!(stderr.contains("CGW_TEST_UNSET_A is not set"), "{stderr}");
    assert!(
        stderr.contains("routes[0].forward.preserve_host"),
        "{stderr}"
    );
    assert!(stderr.contains("CGW_TEST_UNSET_B is not set"), "{stderr}");
    assert!(
        stderr.contains("gateway.yaml:8"),
        "line of the first error: {stderr}"
    );
    let good = run(false);
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(stdout.contains("127.0.0.1:19999"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:18080"), "{stdout}");
}

#[test]
fn token_print_jwks_prints_the_public_key_set() {
    let issuer = consent_gateway::dev_issuer::DevIssuer::generate("k-2026").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, issuer.private_pem()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
        .args(["token", "--kid", "k-2026", "--print-jwks", "--key"])
        .arg(&key)
        .output()
        .expect("run token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&issuer.jwks_json()).unwrap();
    assert_eq!(printed, expected);
    assert_eq!(printed["keys"][0]["kid"], "k-2026");
    assert!(printed["keys"][0].get("d").is_none(), "no private part");
}
