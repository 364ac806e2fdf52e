//! HTTP/2 (SPEC section 13): h2 over TLS (ALPN) and h2c prior knowledge on
//! the listeners, with real clients (reqwest, curl, the h2 crate); the
//! HTTP/2 attacks (authority disagreement, uppercase and connection-specific
//! header names, CONTINUATION floods, rapid reset, too many streams), each
//! asserting that nothing unverified reached the upstream and that the
//! gateway keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::tls::{tls_backend, SelfSigned};
use common::*;

const STREAMS: usize = 8;

/// h2c on the plain listener, h2 by ALPN on the TLS one; the consent route
/// with the year in the path, a body-bound one and an open one.
fn template(tls_addr: SocketAddr) -> String {
    let server = format!(
        r#"  h2c: true
  tls:
    - listen: "{tls_addr}"
      cert: tls.crt
      key: tls.key
      alpn: [h2, http/1.1]
  limits:
    max_request_header_bytes: 8192
    h2_max_concurrent_streams: {STREAMS}
"#
    );
    templates::consent_config(
        &templates::income_route(
            "/income/{fnr}/{year}",
            false,
            &[("inntektsaar", "{ path_param: year }")],
        ),
        templates::Around {
            server: &server,
            rest: r#"  - name: search
    path: /search
    methods: [POST]
    upstream: echo
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        body: { json_pointer: /person/fnr }
  - name: open
    path: /open/{*rest}
    upstream: echo
    auth: none
"#,
            ..Default::default()
        },
    )
}

struct H2World {
    world: World,
    gw: Gateway,
    tls_addr: SocketAddr,
    cert: SelfSigned,
}

fn start() -> H2World {
    let world = World::new();
    let cert = SelfSigned::new("localhost");
    let tls_addr = free_addr();
    let gw = world.start_with(&template(tls_addr), &cert.files());
    world.echo.clear();
    H2World {
        world,
        gw,
        tls_addr,
        cert,
    }
}

fn income_path() -> String {
    format!("/income/{PERSON}/2025")
}

#[test]
fn h2_over_tls_and_h2c_allow_with_the_verified_headers() {
    let w = start();
    let token = w.world.valid_token();
    let tls = w.cert.client(w.tls_addr);
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let tls_url = format!("https://localhost:{}{}", w.tls_addr.port(), income_path());
    let h2c_url = format!("http://{}{}", w.gw.addr, income_path());
    let results = w.world.rt.block_on(async {
        let mut out = Vec::new();
        for (client, url) in [(&tls, &tls_url), (&h2c, &h2c_url)] {
            let r = client.get(url).bearer_auth(&token).send().await.unwrap();
            out.push((r.version(), r.status().as_u16()));
        }
        out
    });
    assert_eq!(
        results,
        vec![
            (reqwest::Version::HTTP_2, 200),
            (reqwest::Version::HTTP_2, 200)
        ]
    );
    let seen = w.world.echo.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (request, (proto, host)) in seen.iter().zip([
        ("https", format!("localhost:{}", w.tls_addr.port())),
        ("http", w.gw.addr.to_string()),
    ]) {
        assert_eq!(request.uri, income_path());
        assert_eq!(request.header("x-consent-subject"), Some(PERSON));
        assert_eq!(request.header("x-consent-to"), Some(CONSUMER));
        assert_eq!(request.header("x-forwarded-proto"), Some(proto));
        // The upstream's Host is the authority the route was decided on.
        assert_eq!(request.header("host"), Some(host.as_str()));
    }
}

#[test]
fn denials_over_h2_are_problem_json_and_never_reach_the_upstream() {
    let w = start();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let other = format!("http://{}/income/{OTHER_PERSON}/2025", w.gw.addr);
    let none = format!("http://{}{}", w.gw.addr, income_path());
    let token = w.world.valid_token();
    let answers = w.world.rt.block_on(async {
        let mut out = Vec::new();
        for r in [
            client.get(&none).send(),
            client.get(&other).bearer_auth(&token).send(),
        ] {
            let r = r.await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            let body: serde_json::Value =
                serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            out.push((ct, body["reason"].as_str().unwrap().to_string()));
        }
        out
    });
    let problem = "application/problem+json".to_string();
    assert_eq!(
        answers,
        vec![
            (problem.clone(), "missing_token".to_string()),
            (problem, "consent_subject_mismatch".to_string()),
        ]
    );
    assert!(w.world.echo.seen().is_empty());
}

/// curl 7.88 with nghttp2: `--http2` over TLS (ALPN) and
/// `--http2-prior-knowledge` over cleartext. Skipped where curl is absent.
#[test]
fn curl_speaks_h2_and_h2c() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed: skipped");
        return;
    }
    let w = start();
    let token = w.world.valid_token();
    let auth = format!("Authorization: Bearer {token}");
    let port = w.tls_addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca = w.gw.dir.path().join("tls.crt");
    let tls_url = format!("https://localhost:{port}{}", income_path());
    let h2c_url = format!("http://{}{}", w.gw.addr, income_path());
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ca = ca.to_str().unwrap();
    assert_eq!(
        curl(&[
            "--http2",
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-H",
            &auth,
            &tls_url
        ]),
        "2 200"
    );
    assert_eq!(
        curl(&["--http2-prior-knowledge", "-H", &auth, &h2c_url]),
        "2 200"
    );
    assert_eq!(curl(&["--http2-prior-knowledge", &h2c_url]), "2 401");
    // Plain HTTP/1.1 still works on the h2c listener.
    assert_eq!(curl(&["--http1.1", "-H", &auth, &h2c_url]), "1.1 200");
    assert_eq!(w.world.echo.seen().len(), 3);
}

/// An h2 connection (prior knowledge) driven by the h2 crate.
async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

/// Sends one request and returns its status, or the h2 error it met.
async fn h2_status(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    request: http::Request<()>,
) -> Result<u16, String> {
    let mut ready = send.clone().ready().await.map_err(|e| e.to_string())?;
    let (response, _) = ready
        .send_request(request, true)
        .map_err(|e| e.to_string())?;
    let response = response.await.map_err(|e| e.to_string())?;
    *send = ready;
    Ok(response.status().as_u16())
}

fn h2_get(addr: SocketAddr, path: &str) -> http::Request<()> {
    http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

/// After an attack: a valid request on a fresh connection is still served.
fn still_serves(w: &H2World) {
    w.world.echo.clear();
    let addr = w.gw.addr;
    let status = w.world.rt.block_on(async {
        let (mut send, _task) = h2_connect(addr).await;
        h2_status(&mut send, h2_get(addr, "/open/after")).await
    });
    assert_eq!(status, Ok(200));
    assert_eq!(w.world.echo.seen().len(), 1);
    assert!(w.gw.admin_get("/healthz").status == 200);
}

#[test]
fn authority_and_host_that_disagree_are_refused() {
    let w = start();
    let addr = w.gw.addr;
    let token = w.world.valid_token();
    let statuses = w.world.rt.block_on(async {
        let (mut send, _task) = h2_connect(addr).await;
        let mut out = Vec::new();
        // `:authority` names a host the routes do not guard differently,
        // `Host` another: whichever a backend read, the gateway refuses.
        for host in ["other.example", "localhost:1"] {
            let request = http::Request::get(format!("http://{addr}{}", income_path()))
                .header("host", host)
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
            out.push(h2_status(&mut send, request).await);
        }
        // The same `Host` as `:authority` is fine.
        let request = http::Request::get(format!("http://{addr}{}", income_path()))
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        out.push(h2_status(&mut send, request).await);
        out
    });
    assert_eq!(statuses, vec![Ok(400), Ok(400), Ok(200)], "{statuses:?}");
    let seen = w.world.echo.seen();
    assert_eq!(seen.len(), 1, "only the agreeing request: {seen:?}");
    assert_eq!(seen[0].header("host"), Some(addr.to_string().as_str()));
    still_serves(&w);
}

// ---- raw frames: what a conforming client library will not send ----------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with a 7-bit prefix (RFC 7541 section 5.1).
fn hpack_len(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128 + 128) as u8);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields without indexing, names as given
/// (uppercase included), no Huffman coding.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_len(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_len(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn request_fields<'a>(authority: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ]
}

/// A raw h2c connection: preface and empty SETTINGS sent.
fn raw_connect(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&hello).unwrap();
    tcp
}

/// The frames the gateway sends (type, flags, stream, payload) until
/// `enough` holds, the connection ends, or nothing comes for 5 s.
fn read_frames(
    tcp: &mut TcpStream,
    enough: impl Fn(&[(u8, u8, u32, Vec<u8>)]) -> bool,
) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).is_err() {
            return frames;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).is_err() {
            return frames;
        }
        if head[3] == SETTINGS && head[4] & 0x1 == 0 {
            // Acknowledge the server's settings, as a client must.
            let _ = tcp.write_all(&frame(SETTINGS, 0x1, 0, &[]));
        }
        frames.push((head[3], head[4], stream, payload));
        if enough(&frames) {
            return frames;
        }
    }
}

/// The stream was refused (RST_STREAM) or the connection closed (GOAWAY)
/// without a response header for it.
fn refused(frames: &[(u8, u8, u32, Vec<u8>)], stream: u32) -> bool {
    let answered = frames.iter().any(|f| f.0 == HEADERS && f.2 == stream);
    let reset = frames.iter().any(|f| f.0 == RST_STREAM && f.2 == stream);
    let goaway = frames.iter().any(|f| f.0 == GOAWAY);
    !answered && (reset || goaway)
}

fn ends_stream_1(frames: &[(u8, u8, u32, Vec<u8>)]) -> bool {
    frames
        .iter()
        .any(|f| (f.0 == RST_STREAM && f.2 == 1) || f.0 == GOAWAY || (f.0 == HEADERS && f.2 == 1))
}

#[test]
fn malformed_header_names_and_connection_headers_are_refused() {
    let w = start();
    let addr = w.gw.addr.to_string();
    let path = "/open/attack";
    let attacks: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("uppercase name", vec![("X-Consent-Subject", PERSON)]),
        ("connection", vec![("connection", "close")]),
        ("keep-alive", vec![("keep-alive", "timeout=5")]),
        ("transfer-encoding", vec![("transfer-encoding", "chunked")]),
        ("upgrade", vec![("upgrade", "websocket")]),
        ("proxy-connection", vec![("proxy-connection", "close")]),
        ("te other than trailers", vec![("te", "gzip")]),
        ("unknown pseudo-header", vec![(":evil", "1")]),
    ];
    for (what, extra) in attacks {
        let mut tcp = raw_connect(w.gw.addr);
        let mut fields = request_fields(&addr, path);
        fields.extend(extra);
        tcp.write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &block(&fields),
        ))
        .unwrap();
        let frames = read_frames(&mut tcp, ends_stream_1);
        assert!(refused(&frames, 1), "{what}: {frames:?}");
        assert!(
            w.world.echo.seen().is_empty(),
            "{what} reached the upstream"
        );
    }
    // The control: `te: trailers` is the one TE an h2 request may carry; it
    // is answered, and (SPEC 12) not forwarded.
    let mut tcp = raw_connect(w.gw.addr);
    let mut fields = request_fields(&addr, "/open/control");
    fields.push(("te", "trailers"));
    tcp.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block(&fields),
    ))
    .unwrap();
    let frames = read_frames(&mut tcp, ends_stream_1);
    assert!(
        frames.iter().any(|f| f.0 == HEADERS && f.2 == 1),
        "{frames:?}"
    );
    let seen = w.world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/open/control");
    assert!(seen[0].header("te").is_none());
    w.world.echo.clear();
    // A pseudo-header after a regular one is malformed too.
    let mut tcp = raw_connect(w.gw.addr);
    let mut fields = vec![(":method", "GET"), ("x-a", "1")];
    fields.extend([(":scheme", "http"), (":authority", &addr), (":path", path)]);
    tcp.write_all(&frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &block(&fields),
    ))
    .unwrap();
    let frames = read_frames(&mut tcp, ends_stream_1);
    assert!(refused(&frames, 1), "late pseudo-header: {frames:?}");
    assert!(w.world.echo.seen().is_empty());
    still_serves(&w);
}

#[test]
fn a_continuation_flood_is_cut_off() {
    let w = start();
    let addr = w.gw.addr.to_string();
    let mut tcp = raw_connect(w.gw.addr);
    let first = block(&request_fields(&addr, "/open/flood"));
    tcp.write_all(&frame(HEADERS, END_STREAM, 1, &first))
        .unwrap();
    // Never END_HEADERS: 1000 CONTINUATION frames of 1 KiB header fields
    // each (far beyond the 8 KiB header list limit).
    let value = "v".repeat(1000);
    let mut sent = 0;
    for i in 0..1000 {
        let name = format!("x-flood-{i}");
        let chunk = frame(CONTINUATION, 0, 1, &block(&[(&name, &value)]));
        if tcp.write_all(&chunk).is_err() {
            break;
        }
        sent += 1;
    }
    let frames = read_frames(&mut tcp, |f| {
        f.iter().any(|f| f.0 == GOAWAY || f.0 == RST_STREAM)
    });
    assert!(
        refused(&frames, 1) || sent < 1000,
        "the flood was not cut off ({sent} frames sent): {frames:?}"
    );
    assert!(w.world.echo.seen().is_empty());
    still_serves(&w);
}

#[test]
fn rapid_reset_closes_the_connection_and_the_gateway_keeps_serving() {
    let w = start();
    let addr = w.gw.addr.to_string();
    let mut tcp = raw_connect(w.gw.addr);
    // HEADERS then RST_STREAM(CANCEL) at once, 500 streams in one write: a
    // token-less request to a consent route, each would be a 401.
    let path = income_path();
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let stream = 2 * i + 1;
        let fields = request_fields(&addr, &path);
        burst.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            stream,
            &block(&fields),
        ));
        burst.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    let _ = tcp.write_all(&burst);
    let frames = read_frames(&mut tcp, |f| f.iter().any(|f| f.0 == GOAWAY));
    assert!(
        frames.iter().any(|f| f.0 == GOAWAY),
        "no GOAWAY after 500 reset streams: {} frames",
        frames.len()
    );
    assert!(w.world.echo.seen().is_empty());
    still_serves(&w);
}

#[test]
fn streams_beyond_the_limit_are_refused_and_the_rest_served() {
    let w = start();
    w.world.echo.set_delay(Duration::from_millis(500));
    let addr = w.gw.addr.to_string();
    let mut tcp = raw_connect(w.gw.addr);
    // Wait for the server's SETTINGS (with its stream limit) first.
    let settings = read_frames(&mut tcp, |f| f.iter().any(|f| f.0 == SETTINGS));
    let limit = settings
        .iter()
        .filter(|f| f.0 == SETTINGS)
        .flat_map(|f| f.3.chunks(6))
        .find(|s| s.len() == 6 && s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(
        limit,
        Some(STREAMS as u32),
        "SETTINGS_MAX_CONCURRENT_STREAMS"
    );
    let total = 3 * STREAMS as u32;
    let mut burst = Vec::new();
    for i in 0..total {
        let path = format!("/open/stream-{i}");
        let fields = request_fields(&addr, &path);
        burst.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            2 * i + 1,
            &block(&fields),
        ));
    }
    tcp.write_all(&burst).unwrap();
    let done = |f: &[(u8, u8, u32, Vec<u8>)]| {
        let ended = f
            .iter()
            .filter(|f| f.0 == RST_STREAM || (f.0 == HEADERS) || f.0 == GOAWAY)
            .count();
        ended >= total as usize || f.iter().any(|f| f.0 == GOAWAY)
    };
    let frames = read_frames(&mut tcp, done);
    let answered = frames.iter().filter(|f| f.0 == HEADERS).count();
    let reset = frames.iter().filter(|f| f.0 == RST_STREAM).count();
    assert!(answered <= STREAMS, "{answered} answered");
    assert!(
        reset >= total as usize - STREAMS,
        "{reset} reset, {answered} answered"
    );
    assert!(w.world.echo.seen().len() <= STREAMS);
    w.world.echo.set_delay(Duration::ZERO);
    still_serves(&w);
}

/// `protocol: h2` to an upstream that offers only `h2` by ALPN (a second
/// gateway, in front of the echo upstream): served; the same upstream as
/// `h1` fails its TLS handshake (502). An h2 client's request with
/// `:authority` only, rewritten by `strip_prefix`, still reaches it.
#[test]
fn upstream_h2_over_tls_is_negotiated_by_alpn() {
    let world = World::new();
    let cert = SelfSigned::new("backend.internal");
    let b_tls = free_addr();
    let backend = tls_backend(&world, &cert, b_tls, Some("[h2]"));
    let front = |protocol: &str| {
        world.start_with(
            &format!(
                r#"
server:
  listen: ["{{listen}}"]
  h2c: true
  admin_listen: "{{admin}}"
  threads: 1
upstreams:
  - name: backend
    targets: ["{b_tls}"]
    tls: true
    sni: backend.internal
    ca_file: backend-ca.pem
    protocol: {protocol}
routes:
  - name: via
    path: /via/{{*rest}}
    strip_prefix: /via
    upstream: backend
    auth: none
"#
            ),
            &[("backend-ca.pem", &cert.cert_pem)],
        )
    };
    let h2 = front("h2");
    world.echo.clear();
    let addr = h2.addr;
    let status = world.rt.block_on(async {
        let (mut send, _task) = h2_connect(addr).await;
        h2_status(&mut send, h2_get(addr, "/via/through-h2?q=1")).await
    });
    assert_eq!(status, Ok(200), "{}", h2.stderr());
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/through-h2?q=1");
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    // The host the front decided on travelled as `:authority`.
    assert_eq!(seen[0].header("host"), Some(addr.to_string().as_str()));

    let h1 = front("h1");
    world.echo.clear();
    let r = h1.get("/via/through-h1", None, &[]);
    assert_eq!(
        (r.status, r.reason().as_str()),
        (502, "upstream_unavailable")
    );
    assert!(world.echo.seen().is_empty());
    drop(backend);
}

/// h2c is opt-in: without `server.h2c` the HTTP/2 preface on a plain
/// listener is an HTTP/1 request the guard refuses (400 problem+json).
#[test]
fn h2c_is_opt_in() {
    let world = World::new();
    let gw = world.start(
        r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: open
    path: /{*rest}
    upstream: echo
    auth: none
"#,
    );
    world.echo.clear();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    let r = raw_bytes(gw.addr, &hello).unwrap();
    assert_eq!((r.status, r.reason().as_str()), (400, "invalid_request"));
    assert!(world.echo.seen().is_empty());
    assert_eq!(gw.get("/still", None, &[]).status, 200);
}

/// A body binding over HTTP/2 (a request body has no `Content-Length` to
/// rely on): the subject in the JSON body is checked, the body forwarded
/// byte for byte; another person in the body is refused unseen.
#[test]
fn a_body_binding_over_h2_checks_and_forwards_the_body() {
    let w = start();
    let token = w.world.valid_token();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://{}/search", w.gw.addr);
    let body = |person: &str| format!(r#"{{"person":{{"fnr":"{person}"}},"year":2025}}"#);
    let statuses = w.world.rt.block_on(async {
        let mut out = Vec::new();
        for person in [PERSON, OTHER_PERSON] {
            let r = client
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body(person))
                .send()
                .await
                .unwrap();
            out.push((r.version(), r.status().as_u16()));
        }
        out
    });
    assert_eq!(
        statuses,
        vec![
            (reqwest::Version::HTTP_2, 200),
            (reqwest::Version::HTTP_2, 403)
        ]
    );
    let seen = w.world.echo.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body, body(PERSON).into_bytes());
    assert_eq!(seen[0].header("x-consent-subject"), Some(PERSON));
}
