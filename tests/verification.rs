//! Checks 3-21 through real HTTP against a real JWKS server: every reason
//! code with its status, `WWW-Authenticate` and the proof that the upstream
//! received nothing; the allow path with every forwarded header.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  max_token_bytes: 8192
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
    max_token_lifetime: 2h
  - name: aud
    issuer: "https://aud.example/"
    jwks_uri: "{jwks}"
    audiences: ["https://api.example.no"]
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
    delegation:
      suppliers: ["0192:303137211"]
    consumers:
      allow: ["0192:310497460", "0192:302685991"]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        path_param: fnr
      metadata:
        required: [inntektsaar]
        match:
          inntektsaar: { path_param: year }
  - name: audience
    path: /aud
    upstream: echo
    auth: token
    issuers: [aud]
  - name: token-only
    path: /token
    upstream: echo
    auth: token
    issuers: [test]
    delegation:
      allow: false
"#;

const GOOD_PATH: &str = "/income/17839116535/2025";

#[derive(Clone)]
struct Case {
    name: &'static str,
    path: String,
    auth: Vec<String>,
    status: u16,
    reason: &'static str,
    challenge: Option<&'static str>,
}

fn challenge(error: Option<&str>) -> String {
    match error {
        None => r#"Bearer realm="consent-gateway""#.to_string(),
        Some(e) => format!(r#"Bearer realm="consent-gateway", error="{e}""#),
    }
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

/// A valid claim set, edited by `edit`.
fn claims_with(world: &World, edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = world.spec().claims(World::now());
    edit(&mut c);
    c
}

fn bearer(t: &str) -> Vec<String> {
    vec![format!("Bearer {t}")]
}

fn cases(world: &World) -> Vec<Case> {
    let now = World::now();
    let valid = world.valid_token();
    let sign = |edit: &dyn Fn(&mut Value)| {
        let mut c = world.spec().claims(now);
        edit(&mut c);
        world.token(&c)
    };
    let payload = world.spec().claims(now).to_string();
    let mut flipped = valid.clone().into_bytes();
    let last = flipped.len() - 3;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let attacker = consent_gateway::dev_issuer::DevIssuer::generate("test-key").unwrap();
    let with_jwk = attacker.sign_raw(
        &json!({"alg": "RS256", "kid": "test-key", "jwk": attacker.jwk()}).to_string(),
        &payload,
    );
    let with_jku = attacker.sign_raw(
        &json!({"alg": "RS256", "kid": "attacker", "jku": "http://127.0.0.1:1/jwks"}).to_string(),
        &payload,
    );
    let none_alg = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","kid":"test-key"}"#),
        b64(&payload)
    );
    let hs256 = {
        // HS256 "signed" with the public key as the secret.
        let header = b64(r#"{"alg":"HS256","kid":"test-key"}"#);
        let body = b64(&payload);
        let key = jsonwebtoken::EncodingKey::from_secret(world.issuer.jwks_json().as_bytes());
        let sig = jsonwebtoken::crypto::sign(
            format!("{header}.{body}").as_bytes(),
            &key,
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        format!("{header}.{body}.{sig}")
    };
    let dup_keys = world.issuer.sign_raw(
        r#"{"alg":"RS256","kid":"test-key"}"#,
        &payload.replacen('{', r#"{"exp":1,"#, 1),
    );
    let no_kid = world.issuer.sign_raw(r#"{"alg":"RS256"}"#, &payload);
    let crit = world.issuer.sign_raw(
        r#"{"alg":"RS256","kid":"test-key","crit":["exp"]}"#,
        &payload,
    );
    let unknown_kid = world
        .issuer
        .sign_raw(r#"{"alg":"RS256","kid":"nope"}"#, &payload);
    let padded = {
        let parts: Vec<&str> = valid.split('.').collect();
        format!("{}=.{}.{}", parts[0], parts[1], parts[2])
    };
    let aud_token = |aud: &str| {
        let mut c = world.spec().claims(now);
        c["iss"] = "https://aud.example/".into();
        c["aud"] = aud.into();
        world.token(&c)
    };
    let inv = Some("invalid_token");
    let scope = Some("insufficient_scope");
    let c = |name, path: &str, auth: Vec<String>, status, reason, challenge| Case {
        name,
        path: path.to_string(),
        auth,
        status,
        reason,
        challenge,
    };
    vec![
        // 3: extraction.
        c("no header", GOOD_PATH, vec![], 401, "missing_token", None),
        c(
            "basic scheme",
            GOOD_PATH,
            vec!["Basic dXNlcjpwYXNz".into()],
            401,
            "missing_token",
            None,
        ),
        c(
            "bearer with nothing",
            GOOD_PATH,
            vec!["Bearer".into()],
            400,
            "invalid_request",
            Some("invalid_request"),
        ),
        c(
            "two credentials",
            GOOD_PATH,
            vec![format!("Bearer {valid} {valid}")],
            400,
            "invalid_request",
            Some("invalid_request"),
        ),
        c(
            "two headers",
            GOOD_PATH,
            vec![format!("Bearer {valid}"), format!("Bearer {valid}")],
            400,
            "invalid_request",
            Some("invalid_request"),
        ),
        c(
            "access_token in query",
            &format!("{GOOD_PATH}?access_token={valid}"),
            bearer(&valid),
            400,
            "invalid_request",
            Some("invalid_request"),
        ),
        c(
            "access_token in query alone",
            &format!("{GOOD_PATH}?access_token={valid}"),
            vec![],
            400,
            "invalid_request",
            Some("invalid_request"),
        ),
        // 4-5: shape.
        c(
            "two parts",
            GOOD_PATH,
            bearer("abc.def"),
            401,
            "malformed_token",
            inv,
        ),
        c(
            "oversize",
            GOOD_PATH,
            bearer(&"a".repeat(9000)),
            401,
            "malformed_token",
            inv,
        ),
        c(
            "padding",
            GOOD_PATH,
            bearer(&padded),
            401,
            "malformed_token",
            inv,
        ),
        c(
            "duplicate keys",
            GOOD_PATH,
            bearer(&dup_keys),
            401,
            "malformed_token",
            inv,
        ),
        c(
            "no kid",
            GOOD_PATH,
            bearer(&no_kid),
            401,
            "unknown_key",
            inv,
        ),
        c(
            "crit",
            GOOD_PATH,
            bearer(&crit),
            401,
            "malformed_token",
            inv,
        ),
        // 6: issuer and algorithm.
        c(
            "foreign issuer",
            GOOD_PATH,
            bearer(&sign(&|c| c["iss"] = "https://evil.example/".into())),
            401,
            "issuer_not_allowed",
            inv,
        ),
        c(
            "issuer without slash",
            GOOD_PATH,
            bearer(&sign(&|c| c["iss"] = "https://test.maskinporten.no".into())),
            401,
            "issuer_not_allowed",
            inv,
        ),
        c(
            "alg none",
            GOOD_PATH,
            bearer(&none_alg),
            401,
            "algorithm_not_allowed",
            inv,
        ),
        c(
            "hs256 with public key",
            GOOD_PATH,
            bearer(&hs256),
            401,
            "algorithm_not_allowed",
            inv,
        ),
        // 8-9: keys and signature.
        c(
            "unknown kid",
            GOOD_PATH,
            bearer(&unknown_kid),
            401,
            "unknown_key",
            inv,
        ),
        c(
            "embedded jku ignored",
            GOOD_PATH,
            bearer(&with_jku),
            401,
            "unknown_key",
            inv,
        ),
        c(
            "embedded jwk ignored",
            GOOD_PATH,
            bearer(&with_jwk),
            401,
            "bad_signature",
            inv,
        ),
        c(
            "flipped signature",
            GOOD_PATH,
            bearer(&flipped),
            401,
            "bad_signature",
            inv,
        ),
        // 10: claims.
        c(
            "no consumer",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c.as_object_mut().unwrap().remove("consumer");
            })),
            401,
            "missing_claim",
            inv,
        ),
        c(
            "no exp",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            401,
            "missing_claim",
            inv,
        ),
        c(
            "exp as string",
            GOOD_PATH,
            bearer(&sign(&|c| c["exp"] = "9999999999".into())),
            401,
            "malformed_token",
            inv,
        ),
        c(
            "control character",
            GOOD_PATH,
            bearer(&sign(&|c| c["jti"] = "a\nb".into())),
            401,
            "malformed_token",
            inv,
        ),
        // 11: time and audience.
        c(
            "expired",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["exp"] = (now - 100).into();
                c["iat"] = (now - 200).into();
            })),
            401,
            "token_expired",
            inv,
        ),
        c(
            "not yet valid",
            GOOD_PATH,
            bearer(&sign(&|c| c["nbf"] = (now + 300).into())),
            401,
            "token_not_yet_valid",
            inv,
        ),
        c(
            "lifetime too long",
            GOOD_PATH,
            bearer(&sign(&|c| c["exp"] = (now + 3 * 3600).into())),
            401,
            "token_lifetime_too_long",
            inv,
        ),
        c(
            "wrong audience",
            "/aud",
            bearer(&aud_token("https://other.example")),
            401,
            "audience_mismatch",
            inv,
        ),
        // 12-14: scopes, delegation, consumers.
        c(
            "no scope",
            GOOD_PATH,
            bearer(&sign(&|c| c["scope"] = "other:scope".into())),
            403,
            "insufficient_scope",
            scope,
        ),
        c(
            "unlisted supplier",
            GOOD_PATH,
            bearer(&sign(
                &|c| {
                    c["supplier"] =
                        json!({"authority": "iso6523-actorid-upis", "ID": "0192:991825827"})
                },
            )),
            403,
            "supplier_not_allowed",
            scope,
        ),
        c(
            "delegation refused",
            "/token",
            bearer(&sign(
                &|c| {
                    c["supplier"] =
                        json!({"authority": "iso6523-actorid-upis", "ID": "0192:303137211"})
                },
            )),
            403,
            "supplier_not_allowed",
            scope,
        ),
        c(
            "consumer not listed",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["consumer"]["ID"] = "0192:991825827".into();
                c["authorization_details"][0]["to"]["ID"] = "0192:991825827".into();
            })),
            403,
            "consumer_not_allowed",
            scope,
        ),
        // 15-21: consent.
        c(
            "no consent",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c.as_object_mut().unwrap().remove("authorization_details");
            })),
            403,
            "consent_missing",
            scope,
        ),
        c(
            "misspelt type",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["authorization_details"][0]["type"] = "urn:altinn:concent".into()
            })),
            403,
            "consent_missing",
            scope,
        ),
        c(
            "system user only",
            GOOD_PATH,
            bearer(&sign(
                &|c| c["authorization_details"] = json!([{"type": "urn:altinn:systemuser", "systemuser_org": {"ID": "0192:310497460"}}]),
            )),
            403,
            "consent_missing",
            scope,
        ),
        c(
            "recipient mismatch",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["authorization_details"][0]["to"]["ID"] = "0192:302685991".into()
            })),
            403,
            "consent_recipient_mismatch",
            scope,
        ),
        c(
            "consent in the future",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["authorization_details"][0]["consented"] = "2099-01-01T00:00:00+00:00".into()
            })),
            403,
            "consent_not_yet_valid",
            scope,
        ),
        c(
            "consent expired",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["authorization_details"][0]["validTo"] =
                    "2020-01-01T00:00:00.1234567+00:00".into()
            })),
            403,
            "consent_expired",
            scope,
        ),
        c(
            "other resource",
            GOOD_PATH,
            bearer(&sign(&|c| {
                c["authorization_details"][0]["consentRights"][0]["resource"][0]["value"] =
                    "other".into()
            })),
            403,
            "consent_resource_mismatch",
            scope,
        ),
        c(
            "other person",
            "/income/05917596738/2025",
            bearer(&valid),
            403,
            "consent_subject_mismatch",
            scope,
        ),
        c(
            "other year",
            "/income/17839116535/2024",
            bearer(&valid),
            403,
            "consent_metadata_mismatch",
            scope,
        ),
        c(
            "second element supplies the resource",
            GOOD_PATH,
            bearer(&sign(&|c| {
                let mut other = c["authorization_details"][0].clone();
                c["authorization_details"][0]["consentRights"][0]["resource"][0]["value"] =
                    "other".into();
                other["from"] = "urn:altinn:person:identifier-no:05917596738".into();
                c["authorization_details"]
                    .as_array_mut()
                    .unwrap()
                    .push(other);
            })),
            403,
            "consent_subject_mismatch",
            scope,
        ),
        c(
            "second right supplies the metadata",
            GOOD_PATH,
            bearer(&sign(&|c| {
                let rights = &mut c["authorization_details"][0]["consentRights"];
                let mut meta_only = rights[0].clone();
                meta_only["resource"][0]["value"] = "other".into();
                rights[0]["metadata"] = json!({"inntektsaar": "2024"});
                rights.as_array_mut().unwrap().push(meta_only);
            })),
            403,
            "consent_metadata_mismatch",
            scope,
        ),
    ]
}

fn send(gw: &Gateway, case: &Case) -> Response {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\n",
        case.path
    );
    for a in &case.auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    gw.raw(&req)
}

#[test]
fn every_denial_has_its_reason_and_never_reaches_upstream() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let mut failures = Vec::new();
    // Twice: the second time, a repeated forged token meets the remembered
    // refusal (and every other case whatever the gateway kept from the first).
    for (round, case) in cases(&world)
        .into_iter()
        .flat_map(|case| [(1, case.clone()), (2, case)])
    {
        world.echo.clear();
        let r = send(&gw, &case);
        let body = r.json();
        let want_challenge = match case.reason {
            "missing_token" => Some(challenge(None)),
            _ => case.challenge.map(|e| challenge(Some(e))),
        };
        let problems = [
            (r.status != case.status).then(|| format!("status {} != {}", r.status, case.status)),
            (r.reason() != case.reason)
                .then(|| format!("reason {} != {}", r.reason(), case.reason)),
            (r.header("www-authenticate").map(str::to_string) != want_challenge).then(|| {
                format!(
                    "challenge {:?} != {want_challenge:?}",
                    r.header("www-authenticate")
                )
            }),
            (!world.echo.seen().is_empty()).then(|| "reached the upstream".to_string()),
            (body["type"] != format!("urn:consent-gateway:{}", case.reason))
                .then(|| format!("type {}", body["type"])),
            (r.body.contains("17839116535") || r.body.contains("eyJ"))
                .then(|| "body echoes an identity number or token".to_string()),
        ];
        for p in problems.into_iter().flatten() {
            failures.push(format!("{} (round {round}): {p}", case.name));
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    // Denials are counted per route and reason.
    assert!(
        gw.metric(r#"consent_gateway_requests_total{decision="deny",reason="consent_subject_mismatch",route="income"}"#)
            >= Some(2.0)
    );
}

#[test]
fn allowed_request_carries_verified_facts_and_no_spoofed_ones() {
    let world = World::new();
    let gw = world.start(CONFIG);
    let claims = claims_with(&world, |c| {
        c["supplier"] = json!({"authority": "iso6523-actorid-upis", "ID": "0192:303137211"});
        c["authorization_details"][0]["consentRights"][0]["metadata"] =
            json!({"InntektsAar": "2025", "Note": "blå bok"});
    });
    let token = world.token(&claims);
    world.echo.clear();
    let r = gw.get(
        GOOD_PATH,
        Some(&token),
        &[
            ("X-Consent-Subject", "05917596738"),
            ("X_Consent_Id", "spoof"),
            ("x.consent.resource", "spoof"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    let detail = &claims["authorization_details"][0];
    assert_eq!(s.header("x-consent-id"), detail["id"].as_str());
    assert_eq!(
        s.header("x-consent-from"),
        Some("urn:altinn:person:identifier-no:17839116535")
    );
    assert_eq!(s.header("x-consent-subject-type"), Some("person"));
    assert_eq!(s.header("x-consent-subject"), Some("17839116535"));
    assert_eq!(s.header("x-consent-to"), Some("0192:310497460"));
    assert_eq!(
        s.header("x-consent-consented"),
        detail["consented"].as_str()
    );
    assert_eq!(s.header("x-consent-valid-to"), detail["validTo"].as_str());
    assert_eq!(
        s.header("x-consent-resource"),
        Some("demo-samtykke-inntekt")
    );
    let meta = URL_SAFE_NO_PAD
        .decode(s.header("x-consent-metadata").expect("metadata header"))
        .unwrap();
    assert_eq!(
        String::from_utf8(meta).unwrap(),
        r#"{"inntektsaar":"2025","note":"blå bok"}"#
    );
    assert_eq!(s.header("x-consent-metadata-inntektsaar"), Some("2025"));
    assert_eq!(s.header("x-consent-metadata-note"), Some("bl%C3%A5%20bok"));
    assert_eq!(s.header("x-consent-consumer"), Some("0192:310497460"));
    assert_eq!(s.header("x-consent-supplier"), Some("0192:303137211"));
    assert_eq!(
        s.header("x-consent-client-id"),
        claims["client_id"].as_str()
    );
    assert_eq!(s.header("x-consent-scope"), Some("demo:inntekt.read"));
    assert_eq!(s.header("x-consent-token-id"), claims["jti"].as_str());
    assert!(s.header_all("x_consent_id").is_empty());
    assert!(s.header_all("x.consent.resource").is_empty());
    assert_eq!(s.header_all("x-consent-subject"), vec!["17839116535"]);
    assert_eq!(
        s.header("authorization").map(str::to_string),
        Some(format!("Bearer {token}"))
    );

    // auth: token routes get only the token headers.
    world.echo.clear();
    let r = gw.get("/token", Some(&world.valid_token()), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let s = &world.echo.seen()[0];
    assert_eq!(s.header("x-consent-consumer"), Some("0192:310497460"));
    assert!(s.header("x-consent-id").is_none());
    assert!(s.header("x-consent-subject").is_none());

    // The audience route accepts a matching `aud` (string or array).
    let mut c = world.spec().claims(World::now());
    c["iss"] = "https://aud.example/".into();
    c["aud"] = json!(["https://x.example", "https://api.example.no"]);
    assert_eq!(gw.get("/aud", Some(&world.token(&c)), &[]).status, 200);

    // The audit line masks the person and never holds the token.
    let out = gw.stdout();
    assert!(out.contains(r#""subject":"*********35""#), "{out}");
    assert!(!out.contains("17839116535"));
    assert!(!out.contains(&token[..40]));
}

const BINDING_CONFIG: &str = r#"
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
  - name: by-header
    path: /by-header
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { header: X-Person-Id }
  - name: by-query
    path: /by-query
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject: { query: fnr }
      metadata:
        match:
          inntektsaar: { query: year }
  - name: socket
    path: /socket
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
"#;

#[test]
fn header_and_query_bindings() {
    let world = World::new();
    let gw = world.start(BINDING_CONFIG);
    let token = world.valid_token();
    world.echo.clear();
    let ok = gw.get(
        "/by-header",
        Some(&token),
        &[("x-person-id", "17839116535")],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let twice = gw.get(
        "/by-header",
        Some(&token),
        &[
            ("X-Person-Id", "17839116535"),
            ("X-Person-Id", "17839116535"),
        ],
    );
    assert_eq!(
        (twice.status, twice.reason().as_str()),
        (400, "invalid_request")
    );
    assert!(twice.header("www-authenticate").is_none());
    let absent = gw.get("/by-header", Some(&token), &[]);
    assert_eq!(
        (absent.status, absent.reason().as_str()),
        (403, "consent_subject_mismatch")
    );

    let ok = gw.get("/by-query?fnr=%31%37839116535&year=2025", Some(&token), &[]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let twice = gw.get(
        "/by-query?fnr=17839116535&fnr=17839116535&year=2025",
        Some(&token),
        &[],
    );
    assert_eq!(
        (twice.status, twice.reason().as_str()),
        (400, "invalid_request")
    );
    let wrong_year = gw.get("/by-query?fnr=17839116535&year=2024", Some(&token), &[]);
    assert_eq!(wrong_year.reason(), "consent_metadata_mismatch");
    let no_year = gw.get("/by-query?fnr=17839116535", Some(&token), &[]);
    assert_eq!(no_year.reason(), "consent_metadata_mismatch");
    let uris: Vec<String> = world.echo.seen().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        uris,
        vec![
            "/by-header".to_string(),
            "/by-query?fnr=%31%37839116535&year=2025".to_string()
        ]
    );
}

#[test]
fn an_upgrade_request_passes_the_same_decision_first() {
    let world = World::new();
    let gw = world.start(BINDING_CONFIG);
    world.echo.clear();
    let r = gw.raw(
        "GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!((r.status, r.reason().as_str()), (401, "missing_token"));
    assert!(
        world.echo.seen().is_empty(),
        "an unauthenticated upgrade reached upstream"
    );
}

#[test]
fn a_refused_requests_body_is_never_read_as_another_request() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    // The body of a refused request is itself a request with a valid token:
    // if the gateway read it as the next request on the connection, the
    // upstream would receive it.
    let smuggled = format!(
        "GET {GOOD_PATH} HTTP/1.1\r\nHost: api.example.no\r\nAuthorization: Bearer {}\r\n\r\n",
        world.valid_token()
    );
    let request = format!(
        "GET {GOOD_PATH} HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut stream = std::net::TcpStream::connect(gw.addr).unwrap();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let mut received = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut received);
    let text = String::from_utf8_lossy(&received);
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(
        world.echo.seen().is_empty(),
        "the smuggled request reached upstream"
    );
}
