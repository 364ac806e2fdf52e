//! SPEC section 13, "Logs and traces": `tracing.otlp_endpoint`. The real
//! gateway binary exports to a loopback OTLP/HTTP receiver written here,
//! which decodes each `ExportTraceServiceRequest`: the spans join the
//! caller's trace, carry the decision and nothing personal, and the upstream
//! is told the gateway's span; a collector that hangs or refuses never holds
//! a request back, and what it costs is counted.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::*;
use consent_gateway::dev_issuer::TokenSpec;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

const BOUND_HEADER_VALUE: &str = "bound-marker-7QX";

/// The consent route with the year and a marker bound to headers, an open
/// route, and an OTLP endpoint: `{otlp}` and `{extra}` are filled by the test.
fn config() -> String {
    templates::consent_config(
        &templates::income_bound_to_headers(),
        templates::Around {
            rest: r#"  - name: open
    path: /open
    auth: none
    upstream: echo
tracing:
  otlp_endpoint: "{otlp}"
{extra}"#,
            ..Default::default()
        },
    )
}

/// How the receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// 200 to every export.
    Answer,
    /// Reads each export and never answers.
    Hang,
}

/// Every POST a receiver got: its path and body.
type Exports = Mutex<Vec<(String, Vec<u8>)>>;

/// A loopback OTLP/HTTP receiver.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Exports>,
}

impl Receiver {
    fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, mode, &shared));
            }
        });
        Self { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, with the raw bodies they came in.
    fn spans(&self) -> Vec<Span> {
        let got = self.got.lock().unwrap();
        let mut spans = Vec::new();
        for (path, body) in got.iter() {
            assert_eq!(path, "/v1/traces", "exports go to the OTLP traces path");
            let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("protobuf");
            for resource in request.resource_spans {
                let resource_attrs = resource.resource.map(|r| r.attributes).unwrap_or_default();
                assert!(
                    resource_attrs.iter().any(|kv| kv.key == "service.name"
                        && text(kv.value.as_ref().and_then(|v| v.value.as_ref()))
                            == Some("consent-gateway")),
                    "service.name: {resource_attrs:?}"
                );
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
        }
        spans
    }

    fn bodies(&self) -> Vec<Vec<u8>> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// Reads HTTP/1.1 requests off one connection; answers or hangs.
fn serve(stream: TcpStream, mode: Mode, got: &Exports) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        got.lock().unwrap().push((path, body));
        if mode == Mode::Hang {
            // Keep the connection open, never answer.
            std::thread::park();
            return;
        }
        let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n\
                      Content-Length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn text(value: Option<&Value>) -> Option<&str> {
    match value {
        Some(Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// A span attribute as text (strings as they are, integers in decimal).
fn attr(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?;
    match value.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn start(world: &World, otlp: &str, extra: &str) -> Gateway {
    let config = config().replace("{otlp}", otlp).replace("{extra}", extra);
    world.start(&config)
}

fn token(world: &World) -> String {
    world.token(
        &TokenSpec {
            metadata: vec![
                ("inntektsaar".into(), "2025".into()),
                ("marker".into(), BOUND_HEADER_VALUE.into()),
            ],
            ..world.spec()
        }
        .claims(World::now()),
    )
}

/// Ends the gateway with SIGTERM and waits for it to exit (a bounded wait,
/// not a timing assertion): queued spans are flushed on the way out.
fn terminate(gw: &mut Gateway) {
    gw.signal("TERM");
    let mut exited = None;
    eventually(30, "the gateway exits after SIGTERM", || {
        exited = gw.child.try_wait().ok().flatten();
        exited.is_some()
    });
    assert!(exited.unwrap().success(), "{}", gw.stderr());
}

#[test]
fn spans_join_the_callers_trace_and_carry_the_decision_and_nothing_personal() {
    let receiver = Receiver::start(Mode::Answer);
    let world = World::new();
    // A base URL: the gateway posts to `/v1/traces` under it.
    let mut gw = start(&world, &receiver.url(), "");
    let token = token(&world);
    let allowed_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let r = gw.get(
        &format!("/income/{PERSON}?fnr={PERSON}"),
        Some(&token),
        &[
            (
                "traceparent",
                &format!("00-{allowed_trace}-{caller_span}-01"),
            ),
            ("X-Income-Year", "2025"),
            ("X-Marker", BOUND_HEADER_VALUE),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let denied_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = gw.get(
        &format!("/income/{OTHER_PERSON}"),
        None,
        &[(
            "traceparent",
            &format!("00-{denied_trace}-b7ad6b7169203331-01"),
        )],
    );
    assert_eq!(r.status, 401);
    // The caller did not sample this one: nothing is exported for it.
    let unsampled_trace = "11111111111111111111111111111111";
    let r = gw.get(
        "/open",
        None,
        &[(
            "traceparent",
            &format!("00-{unsampled_trace}-2222222222222222-00"),
        )],
    );
    assert_eq!(r.status, 200);
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].header("traceparent").unwrap().ends_with("-00"));
    terminate(&mut gw);

    let spans = receiver.spans();
    let of_trace = |trace: &str| -> Vec<&Span> {
        spans.iter().filter(|s| hex(&s.trace_id) == trace).collect()
    };
    // The allowed request: a server span under the caller's, and a client
    // span under it that the upstream was told about.
    let allowed = of_trace(allowed_trace);
    assert_eq!(allowed.len(), 2, "{allowed:#?}");
    let server = allowed
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(server.name, "GET /income/{fnr}");
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(server, "http.route").as_deref(), Some("/income/{fnr}"));
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(server, "url.scheme").as_deref(), Some("http"));
    assert_eq!(
        attr(server, "consent_gateway.route").as_deref(),
        Some("income")
    );
    assert_eq!(
        attr(server, "consent_gateway.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attr(server, "consent_gateway.reason").as_deref(),
        Some("ok")
    );
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    let client = allowed
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .expect("a client span");
    assert_eq!(client.name, "GET");
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(
        attr(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        attr(client, "server.port"),
        Some(world.echo.addr().port().to_string())
    );
    let upstream_saw = seen[0].header("traceparent").unwrap();
    assert_eq!(
        upstream_saw,
        format!("00-{allowed_trace}-{}-01", hex(&client.span_id)),
        "the upstream is told the gateway's span"
    );
    // The denied request: its server span only, with the reason.
    let denied = of_trace(denied_trace);
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0].kind, SpanKind::Server as i32);
    assert_eq!(
        attr(denied[0], "consent_gateway.decision").as_deref(),
        Some("deny")
    );
    assert_eq!(
        attr(denied[0], "consent_gateway.reason").as_deref(),
        Some("missing_token")
    );
    assert_eq!(
        attr(denied[0], "http.response.status_code").as_deref(),
        Some("401")
    );
    assert!(of_trace(unsampled_trace).is_empty());

    // Only the documented attributes: no concrete path or query, no client
    // address, no user agent, no header value.
    const DOCUMENTED: [&str; 14] = [
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "url.scheme",
        "network.protocol.name",
        "network.protocol.version",
        "consent_gateway.route",
        "consent_gateway.decision",
        "consent_gateway.reason",
        "error.type",
        "server.address",
        "server.port",
        "service.name",
        "service.version",
    ];
    for span in &spans {
        for kv in &span.attributes {
            assert!(
                DOCUMENTED.contains(&kv.key.as_str()),
                "{}: {span:#?}",
                kv.key
            );
        }
    }
    // Nothing personal in any byte that left for the collector.
    let signature = token.rsplit('.').next().unwrap();
    for body in receiver.bodies() {
        let body = String::from_utf8_lossy(&body);
        for (what, secret) in [
            ("token", token.as_str()),
            ("token signature", signature),
            ("identity number", PERSON),
            ("other identity number", OTHER_PERSON),
            ("bound header value", BOUND_HEADER_VALUE),
        ] {
            assert!(!body.contains(secret), "{what} exported: {body:?}");
        }
    }
}

#[test]
fn a_hanging_collector_holds_no_request_back_and_drops_are_counted() {
    let receiver = Receiver::start(Mode::Hang);
    let world = World::new();
    let mut gw = start(&world, &receiver.url(), "  queue_spans: 2\n");
    for _ in 0..20 {
        assert_eq!(gw.get("/open", None, &[]).status, 200);
    }
    eventually(30, "spans dropped for a full queue", || {
        gw.series(
            "consent_gateway_trace_spans_dropped_total",
            &[("cause", "queue_full")],
        )
        .is_some_and(|n| n > 0.0)
    });
    assert_eq!(gw.admin_get("/readyz").status, 200);
    let status = gw.status();
    assert!(
        status["tracing"]["dropped"]["queue_full"].as_u64() > Some(0),
        "{status}"
    );
    // SIGTERM still ends the process: the last export's wait is bounded.
    terminate(&mut gw);
}

#[test]
fn a_refusing_collector_holds_no_request_back_and_failures_are_counted_and_logged_once() {
    let world = World::new();
    // Nothing listens there: every export is refused.
    let nobody = free_addr();
    let endpoint = format!("http://{nobody}/v1/traces");
    let gw = start(&world, &endpoint, "");
    for _ in 0..10 {
        assert_eq!(gw.get("/open", None, &[]).status, 200);
    }
    eventually(30, "spans lost to failed exports", || {
        gw.series(
            "consent_gateway_trace_spans_dropped_total",
            &[("cause", "export_failed")],
        )
        .is_some_and(|n| n > 0.0)
    });
    for _ in 0..10 {
        assert_eq!(gw.get("/open", None, &[]).status, 200);
    }
    let stderr = gw.stderr();
    assert_eq!(
        stderr.matches("OTLP export of").count(),
        1,
        "one line a minute at most:\n{stderr}"
    );
    assert_eq!(
        gw.series(
            "consent_gateway_trace_spans_dropped_total",
            &[("cause", "queue_full")],
        ),
        Some(0.0)
    );
    // The pipeline is built at start: a reload that changes it says so.
    let generation = gw.generation();
    let moved = config()
        .replace("{otlp}", "http://127.0.0.1:1/v1/traces")
        .replace("{extra}", "");
    gw.rewrite(&world, &moved);
    eventually(30, "the reload", || gw.generation() > generation);
    assert!(
        gw.stderr().contains("a change of tracing needs a restart"),
        "{}",
        gw.stderr()
    );
    assert_eq!(
        gw.status()["tracing"]["otlp_endpoint"].as_str(),
        Some(endpoint.as_str())
    );
}

#[test]
fn an_authorization_check_exports_its_decision_span() {
    let receiver = Receiver::start(Mode::Answer);
    let world = World::new();
    let authz = free_addr();
    let config = config()
        .replace(
            "  threads: 1\n",
            &format!("  threads: 1\n  authz:\n    listen: \"{authz}\"\n"),
        )
        .replace("{otlp}", &receiver.url())
        .replace("{extra}", "");
    let mut gw = world.start(&config);
    eventually(20, "the authz listener", || {
        raw(
            authz,
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .is_ok()
    });
    let trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    // Traefik ForwardAuth, without a token: denied.
    let check = format!(
        "GET / HTTP/1.1\r\nHost: {authz}\r\nConnection: close\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: api.example.no\r\n\
         X-Forwarded-Uri: /income/{PERSON}\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n"
    );
    let r = raw(authz, &check).expect("check");
    assert_eq!(r.status, 401, "{r:?}");
    terminate(&mut gw);
    let spans = receiver.spans();
    let checked: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == trace).collect();
    assert_eq!(checked.len(), 1, "{checked:#?}");
    let span = checked[0];
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(span.name, "GET /income/{fnr}");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        attr(span, "consent_gateway.reason").as_deref(),
        Some("missing_token")
    );
    assert_eq!(
        attr(span, "consent_gateway.route").as_deref(),
        Some("income")
    );
    for body in receiver.bodies() {
        assert!(!String::from_utf8_lossy(&body).contains(PERSON));
    }
}
