//! SPEC section 13 "Altinn", end to end: the real gateway binary against a
//! loopback fake of Maskinporten (which verifies the client assertion: the
//! signature against the configured public key, `aud`, `exp`, a `jti` never
//! reused), the Altinn token exchange and the Resource Registry (pages,
//! ETags, member changes, errors, slowness).

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use consent_gateway::dev_issuer::DevIssuer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENT_ID: &str = "gw-client-1";
const GW_KID: &str = "gw-key-2026";
const LIST_PATH: &str = "/resourceregistry/api/v1/access-lists/skd/inntekt-banker/members";
/// Members per page the fake answers with.
const PAGE: usize = 2;

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// Every endpoint answers this status.
    Status(u16),
    /// The members endpoint answers a body that is not JSON.
    Malformed,
    /// The last page's `links.next` points at itself.
    Loop,
    /// Every endpoint waits longer than the gateway's time-out.
    Slow,
    /// The members endpoint answers one page of about 6 MB.
    Huge,
}

struct Fake {
    addr: SocketAddr,
    public: jsonwebtoken::DecodingKey,
    mode: Mutex<Mode>,
    members: Mutex<Vec<String>>,
    version: AtomicUsize,
    jtis: Mutex<HashSet<String>>,
    assertion_errors: Mutex<Vec<String>>,
    tokens_issued: AtomicUsize,
    exchanges: AtomicUsize,
    not_modified: AtomicUsize,
}

impl Fake {
    fn start(rt: &tokio::runtime::Runtime, gw_key: &DevIssuer, members: &[&str]) -> Arc<Fake> {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let jwk = gw_key.jwk();
        let public = jsonwebtoken::DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )
        .unwrap();
        let fake = Arc::new(Fake {
            addr: listener.local_addr().unwrap(),
            public,
            mode: Mutex::new(Mode::Ok),
            members: Mutex::new(members.iter().map(|m| m.to_string()).collect()),
            version: AtomicUsize::new(1),
            jtis: Mutex::new(HashSet::new()),
            assertion_errors: Mutex::new(Vec::new()),
            tokens_issued: AtomicUsize::new(0),
            exchanges: AtomicUsize::new(0),
            not_modified: AtomicUsize::new(0),
        });
        let served = Arc::clone(&fake);
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Arc::clone(&served).serve(stream));
            }
        });
        fake
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn set_members(&self, members: &[&str]) {
        *self.members.lock().unwrap() = members.iter().map(|m| m.to_string()).collect();
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    async fn serve(self: Arc<Self>, mut stream: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
        let target = head.split(' ').nth(1).unwrap_or("").to_string();
        let (status, extra, body) = self.answer(&target, &header, &body).await;
        let reply = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    async fn answer(
        &self,
        target: &str,
        header: &(dyn Fn(&str) -> String + Sync),
        body: &str,
    ) -> (u16, String, String) {
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Slow => tokio::time::sleep(Duration::from_secs(3)).await,
            Mode::Status(status) => {
                return (
                    status,
                    String::new(),
                    r#"{"error":"invalid_client"}"#.into(),
                )
            }
            _ => {}
        }
        let bearer = header("authorization");
        if target == "/token" {
            return self.token(body);
        }
        if target == "/authentication/api/v1/exchange/maskinporten" {
            if !bearer.starts_with("Bearer mp-") {
                return (401, String::new(), String::new());
            }
            self.exchanges.fetch_add(1, Ordering::SeqCst);
            return (200, String::new(), jwt_like("altinn"));
        }
        if let Some(id) = target.strip_prefix("/resourceregistry/api/v1/resource/") {
            let body = match id {
                "demo-samtykke-inntekt" => serde_json::json!({
                    "identifier": id, "resourceType": "Consent",
                    "consentMetadata": {"inntektsaar": {"optional": false}},
                    "isOneTimeConsent": false,
                }),
                "demo-samtykke-engang" => serde_json::json!({
                    "identifier": id, "resourceType": "Consent",
                    "consentMetadata": {},
                    "isOneTimeConsent": true,
                }),
                "generic-x" => {
                    serde_json::json!({"identifier": id, "resourceType": "GenericAccessResource"})
                }
                _ => return (404, String::new(), String::new()),
            };
            return (200, String::new(), body.to_string());
        }
        if !target.starts_with(LIST_PATH) {
            return (404, String::new(), String::new());
        }
        if !bearer.starts_with("Bearer ey") {
            return (401, String::new(), String::new());
        }
        if mode == Mode::Malformed {
            return (200, String::new(), "{\"data\": [".into());
        }
        if mode == Mode::Huge {
            let one = format!("\"{}\",", urn(CONSUMER));
            return (
                200,
                String::new(),
                format!("{{\"data\": [{}\"x\"]}}", one.repeat(100_000)),
            );
        }
        let etag = format!("\"v{}\"", self.version.load(Ordering::SeqCst));
        let page: usize = target
            .split_once("?page=")
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0);
        if page == 0 && mode != Mode::Loop && header("if-none-match") == etag {
            self.not_modified.fetch_add(1, Ordering::SeqCst);
            return (304, format!("ETag: {etag}\r\n"), String::new());
        }
        let members = self.members.lock().unwrap().clone();
        let data: Vec<serde_json::Value> = members
            .iter()
            .skip(page * PAGE)
            .take(PAGE)
            .map(|m| serde_json::json!({"id": m, "since": "2026-01-01T00:00:00Z"}))
            .collect();
        let last = (page + 1) * PAGE >= members.len();
        let next = match (last, mode) {
            (true, Mode::Loop) => Some(format!("http://{}{LIST_PATH}?page={page}", self.addr)),
            (true, _) => None,
            (false, _) => Some(format!("http://{}{LIST_PATH}?page={}", self.addr, page + 1)),
        };
        let body = serde_json::json!({"links": {"next": next}, "data": data}).to_string();
        (200, format!("ETag: {etag}\r\n"), body)
    }

    /// Maskinporten's token endpoint: verifies the client assertion.
    fn token(&self, form: &str) -> (u16, String, String) {
        match self.check_assertion(form) {
            Ok(()) => {
                let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::json!({
                    "access_token": format!("mp-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 2,
                });
                (200, String::new(), body.to_string())
            }
            Err(e) => {
                self.assertion_errors.lock().unwrap().push(e);
                (400, String::new(), r#"{"error":"invalid_grant"}"#.into())
            }
        }
    }

    fn check_assertion(&self, form: &str) -> Result<(), String> {
        let field = |name: &str| {
            form.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .to_string()
                })
        };
        if field("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Err("grant_type".into());
        }
        let assertion = field("assertion").ok_or("no assertion")?;
        let header = jsonwebtoken::decode_header(&assertion).map_err(|e| e.to_string())?;
        if header.kid.as_deref() != Some(GW_KID) {
            return Err("kid".into());
        }
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[format!("http://{}/", self.addr)]);
        validation.set_issuer(&[CLIENT_ID]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.leeway = 0;
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(&assertion, &self.public, &validation)
                .map_err(|e| e.to_string())?
                .claims;
        let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
        if !(1..=120).contains(&lifetime) {
            return Err(format!("lifetime {lifetime}"));
        }
        let jti = claims["jti"].as_str().ok_or("no jti")?.to_string();
        if !self.jtis.lock().unwrap().insert(jti) {
            return Err("jti reused".into());
        }
        Ok(())
    }
}

/// A JWT-shaped token with `exp` two seconds ahead (the exchange's answer).
fn jwt_like(sub: &str) -> String {
    let payload = serde_json::json!({"sub": sub, "exp": World::now() + 2});
    format!(
        "eyJhbGciOiJub25lIn0.{}.c2ln",
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

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
  - name: banks
    path: /income/{fnr}
    upstream: echo
    auth: token
    issuers: [test]
    consumers:
      altinn_access_lists: [{owner: skd, identifier: inntekt-banker}]
altinn:
  environment: tt02
  platform_url: "http://{altinn}"
  maskinporten_url: "http://{altinn}"
  maskinporten:
    client_id: "gw-client-1"
    kid: "gw-key-2026"
    key_file: maskinporten.pem
  refresh: 200ms
  max_stale: {max_stale}
  timeout: 1s
  cache_dir: "{cache}"
"#;

/// The consumer's URN in the Resource Registry.
fn urn(consumer: &str) -> String {
    format!(
        "urn:altinn:organization:identifier-no:{}",
        consumer.trim_start_matches("0192:")
    )
}

struct Setup {
    world: World,
    gw_key: DevIssuer,
    fake: Arc<Fake>,
    cache: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let world = World::new();
        let gw_key = DevIssuer::generate(GW_KID).unwrap();
        let consumer = urn(CONSUMER);
        let members = [
            "urn:altinn:organization:identifier-no:991825827",
            "urn:altinn:person:identifier-no:17839116535",
            consumer.as_str(),
        ];
        let fake = Fake::start(&world.rt, &gw_key, &members);
        Self {
            world,
            gw_key,
            fake,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn spawn(&self, max_stale: &str) -> Gateway {
        let template = CONFIG
            .replace("{altinn}", &self.fake.addr.to_string())
            .replace("{max_stale}", max_stale)
            .replace("{cache}", &self.cache.path().display().to_string());
        self.world.spawn(
            &template,
            &[("maskinporten.pem", self.gw_key.private_pem())],
        )
    }

    /// As `spawn` (max_stale 1h), with `route` (YAML) first in `routes`.
    fn spawn_with_route(&self, route: &str) -> Gateway {
        let template = CONFIG
            .replace("routes:\n", &format!("routes:\n{route}"))
            .replace("{altinn}", &self.fake.addr.to_string())
            .replace("{max_stale}", "1h")
            .replace("{cache}", &self.cache.path().display().to_string());
        self.world.spawn(
            &template,
            &[("maskinporten.pem", self.gw_key.private_pem())],
        )
    }

    fn request(&self, gw: &Gateway) -> Response {
        gw.get(
            &format!("/income/{PERSON}"),
            Some(&self.world.valid_token()),
            &[],
        )
    }
}

fn failures(gw: &Gateway) -> f64 {
    gw.series(
        "consent_gateway_altinn_sync_total",
        &[("kind", "access_list"), ("outcome", "failure")],
    )
    .unwrap_or(0.0)
}

/// Neither the PEM nor any line of its base64 body is in `text`.
fn assert_no_key(setup: &Setup, text: &str) {
    assert!(!text.contains("PRIVATE KEY"));
    for line in setup.gw_key.private_pem().lines().filter(|l| l.len() > 20) {
        assert!(!text.contains(line), "a line of the private key leaked");
    }
}

#[test]
fn members_follow_the_registry_with_a_verified_client_assertion() {
    let setup = Setup::new();
    let gw = setup.spawn("1h");
    wait_ready(&gw);
    let allowed = setup.request(&gw);
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    let generation = gw.generation();

    setup
        .fake
        .set_members(&["urn:altinn:organization:identifier-no:991825827"]);
    eventually(20, "the removed consumer is denied", || {
        setup.request(&gw).status == 403
    });
    assert_eq!(setup.request(&gw).reason(), "consumer_not_allowed");
    assert!(
        gw.generation() > generation,
        "a member change is a new generation"
    );

    let consumer = urn(CONSUMER);
    setup.fake.set_members(&[consumer.as_str()]);
    eventually(20, "the added consumer is allowed", || {
        setup.request(&gw).status == 200
    });

    // Tokens expire every 2 s: several fetches, each assertion verified, no
    // jti reused; later syncs are conditional.
    eventually(20, "a second Maskinporten token and a 304", || {
        setup.fake.tokens_issued.load(Ordering::SeqCst) >= 2
            && setup.fake.not_modified.load(Ordering::SeqCst) >= 1
    });
    assert!(
        setup.fake.assertion_errors.lock().unwrap().is_empty(),
        "{:?}",
        setup.fake.assertion_errors.lock().unwrap()
    );
    let status = gw.status();
    let list = &status["altinn"]["access_lists"]["skd/inntekt-banker"];
    assert_eq!(list["members"], 1, "{status}");
    assert_eq!(list["usable"], true);
    assert_eq!(
        status["altinn"]["maskinporten_token"]["last_outcome"],
        "success"
    );
    assert_eq!(
        status["altinn"]["altinn_token_exchange"]["last_outcome"],
        "success"
    );
    assert_eq!(
        gw.series(
            "consent_gateway_access_list_members",
            &[("list", "skd/inntekt-banker")]
        ),
        Some(1.0)
    );
    assert!(gw
        .series(
            "consent_gateway_altinn_sync_total",
            &[("kind", "token"), ("outcome", "success")]
        )
        .is_some_and(|v| v >= 2.0));
    assert_no_key(&setup, &status.to_string());
    assert_no_key(&setup, &gw.stderr());
}

#[test]
fn altinn_down_past_max_stale_answers_503() {
    let setup = Setup::new();
    let gw = setup.spawn("2s");
    wait_ready(&gw);
    assert_eq!(setup.request(&gw).status, 200);
    setup.fake.set_mode(Mode::Status(503));
    eventually(20, "503 access_list_unavailable", || {
        setup.request(&gw).status == 503
    });
    let denied = setup.request(&gw);
    assert_eq!(denied.reason(), "access_list_unavailable");
    assert!(denied.header("retry-after").is_some());
    assert_eq!(
        gw.status()["altinn"]["access_lists"]["skd/inntekt-banker"]["usable"],
        false
    );
    setup.fake.set_mode(Mode::Ok);
    eventually(20, "allowed again once Altinn is back", || {
        setup.request(&gw).status == 200
    });
}

#[test]
fn a_restart_with_altinn_down_serves_the_cached_copy() {
    let setup = Setup::new();
    let first = setup.spawn("1h");
    wait_ready(&first);
    assert_eq!(setup.request(&first).status, 200);
    drop(first);
    setup.fake.set_mode(Mode::Status(503));
    let second = setup.spawn("1h");
    wait_ready(&second);
    assert_eq!(setup.request(&second).status, 200, "{}", second.stderr());
    let status = second.status();
    let list = &status["altinn"]["access_lists"]["skd/inntekt-banker"];
    assert_eq!(list["source"], "cache", "{status}");
    assert_eq!(list["last_outcome"], "failure");
}

#[test]
fn faults_keep_the_last_good_copy_and_never_crash() {
    let setup = Setup::new();
    let gw = setup.spawn("1h");
    wait_ready(&gw);
    assert_eq!(setup.request(&gw).status, 200);
    for mode in [
        Mode::Malformed,
        Mode::Loop,
        Mode::Status(401),
        Mode::Status(429),
        Mode::Status(500),
        Mode::Slow,
        Mode::Huge,
    ] {
        let before = failures(&gw);
        setup.fake.set_mode(mode);
        eventually(20, &format!("a failed sync under {mode:?}"), || {
            failures(&gw) > before
        });
        let answer = setup.request(&gw);
        assert_eq!(answer.status, 200, "{mode:?}: the last good copy serves");
        let error = gw.status()["altinn"]["access_lists"]["skd/inntekt-banker"]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!error.is_empty(), "{mode:?}: the error is shown");
    }
    setup.fake.set_mode(Mode::Ok);
    eventually(20, "a good sync again", || {
        gw.status()["altinn"]["access_lists"]["skd/inntekt-banker"]["last_outcome"] == "success"
    });
    // An empty list is a valid state: it admits no one, logged, never "everyone".
    setup.fake.set_members(&[]);
    eventually(20, "the empty list denies", || {
        setup.request(&gw).status == 403
    });
    assert_eq!(setup.request(&gw).reason(), "consumer_not_allowed");
    assert!(gw.stderr().contains("lists no organisation"));
    assert_no_key(&setup, &gw.stderr());
}

#[test]
fn concurrent_callers_share_one_token_fetch_and_one_exchange() {
    use consent_gateway::altinn::maskinporten::MaskinportenClient;
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("mp.pem");
    std::fs::write(&key_file, setup.gw_key.private_pem()).unwrap();
    let base = format!("http://{}", setup.fake.addr);
    let altinn = consent_gateway::config::Altinn {
        environment: consent_gateway::config::AltinnEnvironment::Tt02,
        platform_url: base.clone(),
        maskinporten_url: base,
        client_id: CLIENT_ID.into(),
        kid: GW_KID.into(),
        key_file,
        scopes: vec!["altinn:resourceregistry/access-list.read".into()],
        refresh: Duration::from_secs(60),
        max_stale: Duration::from_secs(3600),
        timeout: Duration::from_secs(2),
        cache_dir: None,
    };
    let client = Arc::new(MaskinportenClient::new(&altinn).unwrap());
    let tokens: Vec<String> = setup.world.rt.block_on(async {
        let calls = (0..8).map(|_| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.altinn_token().await.unwrap() })
        });
        let mut out = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            out.push(call.await.unwrap());
        }
        out
    });
    assert!(tokens.windows(2).all(|w| w[0] == w[1]), "one token for all");
    assert_eq!(setup.fake.tokens_issued.load(Ordering::SeqCst), 1);
    assert_eq!(setup.fake.exchanges.load(Ordering::SeqCst), 1);
    // A refused assertion (Maskinporten answers 400) is an error, not a panic.
    setup.fake.set_mode(Mode::Status(400));
    let client = MaskinportenClient::new(&altinn).unwrap();
    let refused = setup.world.rt.block_on(client.maskinporten_token());
    let refused = refused.unwrap_err().to_string();
    assert!(
        refused.contains("HTTP 400, Maskinporten says `invalid_client`"),
        "{refused}"
    );
    assert_eq!(
        client
            .status(consent_gateway::altinn::maskinporten::Step::Maskinporten)
            .to_json()["last_outcome"],
        "failure"
    );
}

#[test]
fn altinn_lists_prints_members_and_sync_state() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    let template = CONFIG
        .replace("{altinn}", &setup.fake.addr.to_string())
        .replace("{max_stale}", "1h")
        .replace("{cache}", &setup.cache.path().display().to_string());
    let text = setup.world.render(&template, free_addr(), free_addr());
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, text).unwrap();
    std::fs::write(
        dir.path().join("maskinporten.pem"),
        setup.gw_key.private_pem(),
    )
    .unwrap();
    let lists = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
            .args(["altinn", "lists", "-c"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = lists();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("skd/inntekt-banker: 2 organisation(s) from altinn"),
        "{stdout}"
    );
    assert!(stdout.contains("1 other member(s) ignored"), "{stdout}");
    assert!(stdout.contains(&format!("  {CONSUMER}\n")), "{stdout}");
    assert!(stdout.contains("maskinporten_token: success"), "{stdout}");

    setup.fake.set_mode(Mode::Status(503));
    let out = lists();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "the cached copy is usable: {stdout}");
    assert!(stdout.contains("from cache"), "{stdout}");
    assert!(stdout.contains("last sync failed: HTTP 503"), "{stdout}");
    assert_no_key(
        &setup,
        &format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    );

    std::fs::remove_dir_all(setup.cache.path()).unwrap();
    let out = lists();
    assert_eq!(out.status.code(), Some(1), "no copy at all");
    assert!(String::from_utf8_lossy(&out.stdout).contains("no copy"));
}

#[test]
fn check_online_reports_resources_that_do_not_fit_the_route() {
    let setup = Setup::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("maskinporten.pem"),
        setup.gw_key.private_pem(),
    )
    .unwrap();
    let check = |resources: &str, required: &str| {
        let route = format!(
            "  - name: income\n    path: /i/{{fnr}}\n    upstream: echo\n    issuers: [test]\n    consent:\n      resources: {resources}\n      metadata:\n        required: {required}\n"
        );
        let template = CONFIG
            .replace("routes:\n", &format!("routes:\n{route}"))
            .replace("{altinn}", &setup.fake.addr.to_string())
            .replace("{max_stale}", "1h")
            .replace("{cache}", &setup.cache.path().display().to_string());
        let config = dir.path().join("gateway.yaml");
        std::fs::write(
            &config,
            setup.world.render(&template, free_addr(), free_addr()),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_consent-gateway"))
            .args(["check", "--online", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, stdout) = check("[demo-samtykke-inntekt]", "[InntektsAar]");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "routes[0].consent.resources[0]: `demo-samtykke-inntekt` is a consent resource"
        ),
        "{stdout}"
    );
    let (code, stdout) = check("[generic-x, unknown-y, demo-samtykke-inntekt]", "[]");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("routes[0].consent.resources[0]: `generic-x` is not a consent resource"),
        "{stdout}"
    );
    assert!(
        stdout.contains("routes[0].consent.resources[1]: `unknown-y` is unknown"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "routes[0].consent.resources[2]: `demo-samtykke-inntekt` consentMetadata keys"
        ),
        "{stdout}"
    );
    setup.fake.set_mode(Mode::Status(500));
    let (code, stdout) = check("[demo-samtykke-inntekt]", "[inntektsaar]");
    assert_eq!(code, Some(1));
    assert!(stdout.contains("cannot be looked up: HTTP 500"), "{stdout}");
}

#[test]
fn a_config_reload_keeps_the_synced_members() {
    let setup = Setup::new();
    let gw = setup.spawn("1h");
    wait_ready(&gw);
    assert_eq!(setup.request(&gw).status, 200);
    // Altinn goes away; the file changes: the new generation still holds the copy.
    setup.fake.set_mode(Mode::Status(503));
    let before = gw.generation();
    let template = CONFIG
        .replace("{altinn}", &setup.fake.addr.to_string())
        .replace("{max_stale}", "1h")
        .replace("{cache}", &setup.cache.path().display().to_string())
        .replace("    auth: token\n", "    auth: token\n    methods: [GET]\n");
    gw.rewrite(&setup.world, &template);
    eventually(20, "the reload", || gw.generation() > before);
    assert_eq!(setup.request(&gw).status, 200, "{}", gw.stderr());
    let other = gw.get(
        &format!("/income/{PERSON}"),
        Some(
            &setup.world.token(
                &consent_gateway::dev_issuer::TokenSpec {
                    consumer: "0192:991825827".into(),
                    ..setup.world.spec()
                }
                .claims(World::now()),
            ),
        ),
        &[],
    );
    assert_eq!(other.status, 200, "the other organisation on the list");
}

#[test]
fn the_running_gateway_looks_consent_resources_up_for_status() {
    let setup = Setup::new();
    let route = "  - name: income\n    path: /i/{fnr}\n    upstream: echo\n    issuers: [test]\n    consent:\n      resources: [demo-samtykke-inntekt, generic-x]\n      metadata:\n        required: [inntektsaar]\n";
    let gw = setup.spawn_with_route(route);
    wait_ready(&gw);
    eventually(20, "both resources in /status", || {
        gw.status()["altinn"]["resources"]
            .as_object()
            .is_some_and(|r| r.len() == 2)
    });
    let resources = gw.status()["altinn"]["resources"].clone();
    assert_eq!(
        resources["demo-samtykke-inntekt"]["resource_type"],
        "Consent"
    );
    assert_eq!(
        resources["demo-samtykke-inntekt"]["problems"],
        serde_json::json!([])
    );
    assert!(resources["generic-x"]["problems"][0]
        .as_str()
        .unwrap()
        .contains("not a consent resource"));
    assert!(gw
        .series(
            "consent_gateway_altinn_sync_total",
            &[("kind", "resource"), ("outcome", "success")]
        )
        .is_some_and(|v| v >= 2.0));
    assert!(gw
        .series(
            "consent_gateway_altinn_last_success_timestamp_seconds",
            &[("kind", "resource")]
        )
        .is_some());
}

/// Issue 15 with issue 16: a resource the Resource Registry marks
/// `isOneTimeConsent` makes its consents one-time on a route that does not
/// say `one_time` itself: the second use is `consent_already_used`, and the
/// upstream saw one request.
#[test]
fn a_one_time_resource_in_the_registry_makes_its_consents_one_time() {
    let setup = Setup::new();
    let route = "  - name: once\n    path: /once/{fnr}\n    upstream: echo\n    issuers: [test]\n    consent:\n      resources: [demo-samtykke-engang]\n      subject: { path_param: fnr }\n";
    let gw = setup.spawn_with_route(route);
    wait_ready(&gw);
    eventually(20, "the resource's one-time flag in /status", || {
        gw.status()["altinn"]["resources"]["demo-samtykke-engang"]["one_time"] == true
    });
    let spec = consent_gateway::dev_issuer::TokenSpec {
        resource: Some("demo-samtykke-engang".into()),
        metadata: vec![],
        ..setup.world.spec()
    };
    let token = setup.world.token(&spec.claims(World::now()));
    let path = format!("/once/{PERSON}");
    setup.world.echo.clear();
    assert_eq!(gw.get(&path, Some(&token), &[]).status, 200);
    let again = gw.get(&path, Some(&token), &[]);
    assert_eq!(again.status, 403, "{}", again.body);
    assert_eq!(again.reason(), "consent_already_used");
    assert_eq!(setup.world.echo.seen().len(), 1, "the upstream saw one use");
}
