//! gRPC through the gateway (SPEC section 13): a tonic client against
//! tonic's own health service (unary `Check`, server-streaming `Watch`) as
//! an h2c upstream. Allowed calls pass with their messages and trailers,
//! the subject bound from gRPC metadata; refusals on a `grpc: true` route
//! are gRPC statuses in a trailers-only response, and never reach the
//! upstream.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// The metadata of every call the upstream served.
type Seen = Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>;

struct Upstream {
    addr: SocketAddr,
    seen: Seen,
    reporter: tonic_health::server::HealthReporter,
}

/// tonic's health service on an ephemeral port, recording each call's
/// metadata (an interceptor runs before the service).
fn start_upstream(world: &World) -> Upstream {
    world.rt.block_on(async {
        let (reporter, service) = tonic_health::server::health_reporter();
        let seen: Seen = Arc::default();
        let record = Arc::clone(&seen);
        let service = tonic::service::interceptor::InterceptedService::new(
            service,
            move |request: tonic::Request<()>| {
                record.lock().unwrap().push(request.metadata().clone());
                Ok(request)
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(tonic::transport::Server::builder().serve_with_incoming(service, incoming));
        Upstream {
            addr,
            seen,
            reporter,
        }
    })
}

fn template(grpc: SocketAddr) -> String {
    format!(
        r#"
server:
  listen: ["{{listen}}"]
  h2c: true
  admin_listen: "{{admin}}"
  threads: 1
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{{jwks}}"
upstreams:
  - name: health
    targets: ["{grpc}"]
    protocol: h2c
routes:
  - name: health
    path: /grpc.health.v1.Health/{{method}}
    methods: [POST]
    upstream: health
    grpc: true
    issuers: [test]
    consent:
      resources: ["demo-samtykke-inntekt"]
      subject:
        header: x-person-id
      metadata:
        required: [inntektsaar]
        match:
          inntektsaar: {{ header: x-year }}
"#
    )
}

struct GrpcWorld {
    world: World,
    upstream: Upstream,
    gw: Gateway,
}

fn start() -> GrpcWorld {
    let world = World::new();
    let upstream = start_upstream(&world);
    let gw = world.start(&template(upstream.addr));
    GrpcWorld {
        world,
        upstream,
        gw,
    }
}

async fn client(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

/// A request carrying the token and the bound metadata.
fn call<T>(message: T, token: Option<&str>, person: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(token) = token {
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    metadata.insert("x-person-id", person.parse().unwrap());
    metadata.insert("x-year", "2025".parse().unwrap());
    request
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[test]
fn unary_calls_pass_with_verified_metadata_and_trailers() {
    let g = start();
    let token = g.world.valid_token();
    let addr = g.gw.addr;
    let (serving, not_found) = g.world.rt.block_on(async {
        let mut health = client(addr).await;
        let ok = health.check(call(check(""), Some(&token), PERSON)).await;
        // The upstream's own error status (trailers-only) passes through.
        let missing = health
            .check(call(check("no.such.Service"), Some(&token), PERSON))
            .await;
        (ok, missing)
    });
    let serving = serving.expect("allowed call").into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);
    let status = not_found.expect_err("unknown service");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let seen = g.upstream.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let first = &seen[0];
    assert_eq!(first.get("x-consent-subject").unwrap(), PERSON);
    assert_eq!(first.get("x-consent-to").unwrap(), CONSUMER);
    assert!(first.get("x-consent-id").is_some());
    assert_eq!(first.get("content-type").unwrap(), "application/grpc");
    // The gateway's own `te: trailers` on the h2 hop.
    assert_eq!(first.get("te").unwrap(), "trailers");
}

#[test]
fn server_streaming_passes_each_message_and_the_final_trailers() {
    let g = start();
    let token = g.world.valid_token();
    let addr = g.gw.addr;
    let mut reporter = g.upstream.reporter.clone();
    let messages = g.world.rt.block_on(async {
        reporter
            .set_service_status("demo", tonic_health::ServingStatus::Serving)
            .await;
        let mut health = client(addr).await;
        let mut stream = health
            .watch(call(check("demo"), Some(&token), PERSON))
            .await
            .expect("allowed watch")
            .into_inner();
        let mut statuses = Vec::new();
        let first = stream.message().await.expect("first message").unwrap();
        statuses.push(first.status);
        reporter
            .set_service_status("demo", tonic_health::ServingStatus::NotServing)
            .await;
        let second = stream.message().await.expect("second message").unwrap();
        statuses.push(second.status);
        // Dropping the service's status ends the upstream's stream: its
        // trailers (grpc-status 0) must arrive for a clean end.
        reporter.clear_service_status("demo").await;
        let end = stream.message().await;
        (statuses, end.map(|m| m.is_none()).map_err(|s| s.code()))
    });
    assert_eq!(
        messages,
        (
            vec![
                ServingStatus::Serving as i32,
                ServingStatus::NotServing as i32
            ],
            Ok(true)
        )
    );
    assert_eq!(g.upstream.seen.lock().unwrap().len(), 1);
}

#[test]
fn refusals_are_grpc_statuses_and_never_reach_the_upstream() {
    let g = start();
    let addr = g.gw.addr;
    let token = g.world.valid_token();
    let expired = {
        let mut spec = g.world.spec();
        spec.ttl_seconds = 60;
        g.world.token(&spec.claims(World::now() - 7200))
    };
    let outcomes = g.world.rt.block_on(async {
        let mut health = client(addr).await;
        let mut out = Vec::new();
        for (token, person) in [
            (None, PERSON),
            (Some(token.as_str()), OTHER_PERSON),
            (Some(expired.as_str()), PERSON),
        ] {
            let status = health
                .check(call(check(""), token, person))
                .await
                .expect_err("refused");
            out.push((status.code(), status.message().to_string()));
        }
        out
    });
    assert_eq!(
        outcomes,
        vec![
            (tonic::Code::Unauthenticated, "missing_token".to_string()),
            (
                tonic::Code::PermissionDenied,
                "consent_subject_mismatch".to_string()
            ),
            (tonic::Code::Unauthenticated, "token_expired".to_string()),
        ]
    );
    assert!(g.upstream.seen.lock().unwrap().is_empty());
}

/// The refusal's wire form, read with the h2 crate: one HEADERS frame that
/// ends the stream (trailers-only), HTTP 200, `application/grpc`.
#[test]
fn a_refusal_is_one_trailers_only_header_block() {
    let g = start();
    let addr = g.gw.addr;
    let (status, headers, ended) = g.world.rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut send = send.ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("x-person-id", PERSON)
            .header("x-year", "2025")
            .body(())
            .unwrap();
        let (response, mut body) = send.send_request(request, false).unwrap();
        // An empty message: 5-byte gRPC frame header, length 0.
        body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let response = response.await.unwrap();
        let ended = response.body().is_end_stream();
        (
            response.status().as_u16(),
            response.headers().clone(),
            ended,
        )
    });
    assert_eq!(status, 200);
    assert!(ended, "trailers-only: the header block ends the stream");
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "16");
    assert_eq!(headers["grpc-message"], "missing_token");
    assert!(headers.get("x-request-id").is_some());
    assert!(g.upstream.seen.lock().unwrap().is_empty());
}

/// A gRPC route answered over HTTP/1.1 (no gRPC client would, but nothing
/// may pass): the same status in the headers, an explicitly empty body.
#[test]
fn a_refusal_over_http1_is_the_same_status_with_an_empty_body() {
    let g = start();
    let r = g.gw.raw(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\n\
         X-Person-Id: 17839116535\r\nContent-Length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("grpc-status"), Some("16"));
    assert_eq!(r.header("grpc-message"), Some("missing_token"));
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.body.is_empty());
    assert!(g.upstream.seen.lock().unwrap().is_empty());
}
