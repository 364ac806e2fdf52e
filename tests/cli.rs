//! The command line, black-box: `check`, `run`, `token`, `explain`, exit
//! codes and output.

mod common;

use std::process::Command;

use common::*;
use consent_gateway::keys::{Alg, KeySet};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
}

const ROUTE_CONFIG: &str = r#"
server:
  listen: ["127.0.0.1:18080"]
  admin_listen: null
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["127.0.0.1:18081"]
routes:
  - name: income
    path: /income/{fnr}/{year}
    methods: [GET]
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { path_param: fnr }
      metadata:
        match:
          inntektsaar: { path_param: year }
"#;

#[test]
fn check_accepts_the_example_and_reports_every_error() {
    let out = bin()
        .args(["check", "-c", "gateway.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("routes"), "{text}");
    assert!(text.contains("maskinporten-test"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("gateway.yaml");
    std::fs::write(
        &bad,
        "upstreams:\n  - name: a\n    targets: []\nroutes:\n  - name: r\n    path: /x\n    upstream: missing\n    auth: none\n",
    )
    .unwrap();
    let out = bin().arg("check").arg("-c").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams[0].targets"), "{err}");
    assert!(err.contains("routes[0].upstream"), "{err}");
    assert!(err.contains("gateway.yaml:"), "{err}");

    // `run` refuses the same file, and the config comes from the env var
    // when neither -c nor a verb is given.
    let out = bin().env("CONSENT_GATEWAY_CONFIG", &bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[0].upstream"));
    let out = bin()
        .args(["--log-level", "loud", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn token_mints_what_the_jwks_verifies() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, world.issuer.private_pem()).unwrap();
    let out = bin()
        .arg("token")
        .arg("--key")
        .arg(&key)
        .args([
            "--kid",
            "test-key",
            "--from",
            "17839116535",
            "--resource",
            "demo-samtykke-inntekt",
        ])
        .args([
            "--metadata",
            "inntektsaar=2025",
            "--ttl",
            "5m",
            "--consumer",
            "310497460",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3);
    let set = KeySet::parse(world.issuer.jwks_json().as_bytes(), &[Alg::RS256], None).unwrap();
    let (message, signature) = consent_gateway::dev_issuer::split_signature(&token);
    assert!(set
        .get("test-key")
        .unwrap()
        .verify(Alg::RS256, message.as_bytes(), &signature));
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["consumer"]["ID"], "0192:310497460");
    assert_eq!(
        payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
        300
    );
    let detail = &payload["authorization_details"][0];
    assert_eq!(
        detail["from"],
        "urn:altinn:person:identifier-no:17839116535"
    );
    assert_eq!(
        detail["consentRights"][0]["metadata"]["inntektsaar"],
        "2025"
    );

    let out = bin()
        .arg("token")
        .arg("--key")
        .arg(&key)
        .args(["--ttl", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin()
        .args(["token", "--key", "/nonexistent.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn explain_prints_each_check_and_exits_by_decision() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, ROUTE_CONFIG.replace("{jwks}", &world.jwks.url())).unwrap();
    let token = world.valid_token();
    let explain = |url: &str, extra: &[&str]| {
        bin()
            .arg("explain")
            .arg("-c")
            .arg(&config)
            .args(["--method", "GET", "--url", url, "--token", &token])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = explain("http://api.example.no/income/17839116535/2025", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("decision: allow"), "{text}");
    assert!(text.contains("signature"), "{text}");
    assert!(!text.contains(&token), "explain echoed the token");

    let out = explain("http://api.example.no/income/05917596738/2025", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("decision: deny (consent_subject_mismatch)"),
        "{text}"
    );
    assert!(text.contains("FAIL"), "{text}");
    assert!(
        !text.contains("05917596738"),
        "explain printed an identity number in clear: {text}"
    );

    let out = explain(
        "http://api.example.no/income/17839116535/2025",
        &["--no-verify"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = explain("http://api.example.no/nowhere", &["--no-verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no_route"));
    let out = explain("not a url at all", &["--no-verify"]);
    assert_eq!(out.status.code(), Some(2));
}
