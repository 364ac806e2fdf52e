//! SPEC section 13, "Logs and traces": the operational log at every level
//! holds no token, no national identity number and no bound value unless
//! `--log-personal-data`; `--log-format`; the audit line's personal data.

mod common;

use common::*;
use consent_gateway::dev_issuer::TokenSpec;

/// A metadata value bound from a header: distinctive, so a grep finds it.
const BOUND_YEAR: &str = "2025";
const BOUND_HEADER_VALUE: &str = "bound-marker-7QX";

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
    path: /income/{fnr}
    methods: [GET]
    upstream: echo
    issuers: [test]
    scopes:
      all: ["demo:inntekt.read"]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
      metadata:
        required: [inntektsaar, marker]
        match:
          inntektsaar: { header: X-Income-Year }
          marker: { header: X-Marker }
audit:
  personal_data: masked
"#;

fn spawn(world: &World, args: &[&str]) -> Gateway {
    let gw = world.spawn_custom(CONFIG, &[], args, &|dir, text| {
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
