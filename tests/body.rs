//! SPEC section 13, "Routes": the data subject and metadata read from the
//! request body (`json_pointer`, `form_field`). The gateway buffers at most
//! `max_body_bytes`, checks, and forwards the body byte for byte; every bad
//! body is refused before anything reaches the upstream.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
  - name: search
    path: /search
    methods: [POST]
    upstream: echo
    issuers: [test]
    max_body_bytes: 1024
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { body: { json_pointer: /person/fnr } }
      metadata:
        match:
          inntektsaar: { body: { json_pointer: /year } }
  - name: form
    path: /form
    methods: [POST]
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { body: { form_field: fnr } }
  - name: upload
    path: /upload
    methods: [POST]
    upstream: echo
    auth: none
"#;

fn post(
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    raw_bytes(gw.addr, &bytes).expect("response")
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// A name, the request's headers and body, and the status and reason due.
type BodyCase = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
    &'static str,
);

#[test]
fn a_json_body_binds_subject_and_metadata_and_is_forwarded_byte_for_byte() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let token = world.valid_token();
    let body = format!(r#"{{ "person": {{ "fnr": "{PERSON}" }}, "year": 2025, "extra": [1, 2] }}"#);
    let ok = post(&gw, "/search", Some(&token), &[JSON], body.as_bytes());
    assert_eq!(ok.status, 200, "{}", ok.body);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body.as_bytes(), "byte for byte");
    assert_eq!(seen[0].header("x-consent-subject"), Some(PERSON));

    // The body names another person (or another year): denied, unseen.
    for (other, reason) in [
        (
            format!(r#"{{"person":{{"fnr":"{OTHER_PERSON}"}},"year":2025}}"#),
            "consent_subject_mismatch",
        ),
        (
            format!(r#"{{"person":{{"fnr":"{PERSON}"}},"year":2024}}"#),
            "consent_metadata_mismatch",
        ),
        (r#"{"year":2025}"#.to_string(), "consent_subject_mismatch"),
    ] {
        world.echo.clear();
        let denied = post(&gw, "/search", Some(&token), &[JSON], other.as_bytes());
        assert_eq!(denied.status, 403, "{other}");
        assert_eq!(denied.reason(), reason, "{other}");
        assert!(world.echo.seen().is_empty(), "{other} reached the upstream");
    }
}

#[test]
fn bad_bodies_are_refused_before_the_token_and_never_forwarded() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let token = world.valid_token();
    let good = format!(r#"{{"person":{{"fnr":"{PERSON}"}},"year":2025}}"#);
    let duplicate =
        format!(r#"{{"person":{{"fnr":"{OTHER_PERSON}","fnr":"{PERSON}"}},"year":2025}}"#);
    let nested_duplicate =
        format!(r#"{{"person":{{"fnr":"{PERSON}"}},"year":2025,"x":{{"a":1,"a":2}}}}"#);
    let bom = format!("\u{feff}{good}");
    let object = format!(r#"{{"person":{{"fnr":{{"v":"{PERSON}"}}}},"year":2025}}"#);
    let big = format!(
        r#"{{"person":{{"fnr":"{PERSON}"}},"year":2025,"pad":"{}"}}"#,
        "x".repeat(1100)
    );
    let cases: Vec<BodyCase> = vec![
        (
            "duplicate",
            vec![JSON],
            duplicate.into_bytes(),
            400,
            "invalid_request",
        ),
        (
            "nested duplicate",
            vec![JSON],
            nested_duplicate.into_bytes(),
            400,
            "invalid_request",
        ),
        ("BOM", vec![JSON], bom.into_bytes(), 400, "invalid_request"),
        (
            "not JSON",
            vec![JSON],
            b"{\"person\":".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "invalid UTF-8",
            vec![JSON],
            b"{\"person\":{\"fnr\":\"\xff\"}}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "an object, not a value",
            vec![JSON],
            object.into_bytes(),
            400,
            "invalid_request",
        ),
        (
            "too large",
            vec![JSON],
            big.into_bytes(),
            413,
            "body_too_large",
        ),
        (
            "text/plain",
            vec![("Content-Type", "text/plain")],
            good.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "no Content-Type",
            vec![],
            good.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "gzip",
            vec![JSON, ("Content-Encoding", "gzip")],
            good.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (name, headers, body, status, reason) in cases {
        world.echo.clear();
        // No token at all: a bad body is the request's fault first.
        let refused = post(&gw, "/search", None, &headers, &body);
        assert_eq!(refused.status, status, "{name}: {}", refused.body);
        assert_eq!(refused.reason(), reason, "{name}");
        let with_token = post(&gw, "/search", Some(&token), &headers, &body);
        assert_eq!(with_token.status, status, "{name} with a token");
        assert!(world.echo.seen().is_empty(), "{name} reached the upstream");
    }
    let too_large = post(
        &gw,
        "/search",
        Some(&token),
        &[JSON],
        format!("{{\"pad\":\"{}\"}}", "x".repeat(2000)).as_bytes(),
    );
    assert_eq!(too_large.header("connection"), Some("close"));
}

#[test]
fn form_bodies_chunked_uploads_and_100_continue() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let token = world.valid_token();
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let body = format!("year=2025&fnr={PERSON}");
    let ok = post(&gw, "/form", Some(&token), &[form], body.as_bytes());
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(world.echo.seen()[0].body, body.as_bytes());
    world.echo.clear();
    let twice = format!("fnr={OTHER_PERSON}&fnr={PERSON}");
    let refused = post(&gw, "/form", Some(&token), &[form], twice.as_bytes());
    assert_eq!(
        (refused.status, refused.reason().as_str()),
        (400, "invalid_request")
    );
    let json_on_form = post(&gw, "/form", Some(&token), &[JSON], body.as_bytes());
    assert_eq!(json_on_form.status, 415);
    assert!(world.echo.seen().is_empty());

    // A chunked upload with 100-continue: the client is told to go on
    // before it sends, and the upstream gets the decoded body whole.
    let json = format!(r#"{{"person":{{"fnr":"{PERSON}"}},"year":2025}}"#);
    let (first, second) = json.split_at(10);
    let mut stream = TcpStream::connect(gw.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /search HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("head");
    let mut continue_line = [0u8; 25];
    stream.read_exact(&mut continue_line).expect("100 Continue");
    assert!(
        continue_line.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&continue_line)
    );
    let chunks = format!(
        "{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    stream.write_all(chunks.as_bytes()).expect("body");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("200"), "{text}");
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1, "{text}");
    assert_eq!(seen[0].body, json.as_bytes());
    assert_eq!(
        seen[0].header("expect"),
        None,
        "the client was answered already"
    );

    // A route that binds no body streams it as before.
    world.echo.clear();
    let upload = vec![b'u'; 200_000];
    let streamed = post(
        &gw,
        "/upload",
        None,
        &[("Content-Type", "application/octet-stream")],
        &upload,
    );
    assert_eq!(streamed.status, 200);
    assert_eq!(world.echo.seen()[0].body_len, upload.len());
}
