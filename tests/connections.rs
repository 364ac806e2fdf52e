//! Connections (SPEC section 13) on raw sockets through the real binary:
//! nothing accepted is lost. Each test asserts what the client received,
//! byte for byte where it matters, and what the upstream saw.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  limits:
    max_request_header_bytes: 8192
issuers:
  - name: test
    issuer: "https://test.maskinporten.no/"
    jwks_uri: "{jwks}"
upstreams:
  - name: echo
    targets: ["{upstream}"]
    read_timeout: 1s
  - name: dead
    targets: ["{dead}"]
  - name: pair
    targets: ["{upstream}", "{dead}"]
routes:
  - name: open
    path: /open/{*rest}
    upstream: echo
    auth: none
  - name: dead
    path: /dead/{*rest}
    upstream: dead
    auth: none
  - name: pair
    path: /pair/{*rest}
    upstream: pair
    auth: none
  - name: token
    path: /token/{*rest}
    methods: [GET]
    upstream: echo
    auth: token
    issuers: [test]
"#;

/// The template with `{dead}`: a loopback address nothing listens on.
fn config() -> String {
    CONFIG.replace("{dead}", &free_addr().to_string())
}

/// One response read off a connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The head as received, status line and header lines.
    head: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Asserts a problem+json refusal with its reason, a request id that the
    /// body repeats, and no trace of pingora's own answers.
    fn assert_problem(&self, status: u16, reason: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["reason"], reason, "{self:?}");
        let id = self.header("x-request-id").expect("X-Request-Id");
        assert_eq!(body["request_id"], id, "{self:?}");
        assert!(
            !self.head.to_ascii_lowercase().contains("server: pingora"),
            "{self:?}"
        );
    }
}

/// A raw client connection that reads responses one at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads more bytes; false at the end of the stream (or an error).
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next complete response (Content-Length or chunked), or `None`
    /// when the connection ends before one arrives.
    fn answer(&mut self) -> Option<Answer> {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end - 4]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        self.buf.drain(..end);
        let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break p;
                    }
                    if !self.fill() {
                        return None;
                    }
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    if !self.fill() {
                        return None;
                    }
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else {
            let len: usize = find("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < len {
                if !self.fill() {
                    return None;
                }
            }
            self.buf.drain(..len).collect()
        };
        Some(Answer {
            status,
            head,
            headers,
            body,
        })
    }

    /// Whether the server ends the connection in an orderly way (FIN, no
    /// reset) with nothing more to read.
    fn ends_cleanly(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return self.buf.is_empty(),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return false,
            }
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: api.example.no\r\n\r\n")
}

/// The URI the echo upstream reports in its answer.
fn echoed_uri(answer: &Answer) -> String {
    answer.json()["uri"].as_str().unwrap_or("").to_string()
}

/// Sends `first` on a keep-alive connection and reads its answer; then, as a
/// careful client does, sends a second request on the same connection when
/// the answer kept it open, or on a new one when it said `Connection:
/// close` (and then the old one must end cleanly). The second request must
/// always get its answer.
fn then_next_request_is_answered(gw: &Gateway, first: &[u8]) -> Answer {
    let mut conn = Conn::open(gw.addr);
    conn.send(first);
    let answer = conn.answer().expect("an answer to the first request");
    if answer.closes() {
        assert!(
            conn.ends_cleanly(),
            "the connection must end after {answer:?}"
        );
        conn = Conn::open(gw.addr);
    }
    conn.send(get("/open/next").as_bytes());
    let next = conn
        .answer()
        .unwrap_or_else(|| panic!("no answer to the request after {answer:?}"));
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(echoed_uri(&next), "/open/next");
    answer
}

/// Items 1 and 5, and the keep-alive client after every kind of refusal
/// and upstream failure: the answer never claims `keep-alive` on a
/// connection the gateway then closes.
#[test]
fn after_every_refusal_and_upstream_failure_the_next_request_is_answered() {
    let world = World::new();
    let gw = world.start(&config());
    let pad = "p".repeat(9000);
    let cases: Vec<(String, u16, &str)> = vec![
        (get("/nowhere"), 404, "no_route"),
        (
            "POST /token/x HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: 0\r\n\r\n".into(),
            405,
            "method_not_allowed",
        ),
        (get("/token/x"), 401, "missing_token"),
        (
            "GET /token/x HTTP/1.1\r\nHost: api.example.no\r\nAuthorization: Bearer a.b.c\r\n\r\n"
                .into(),
            401,
            "malformed_token",
        ),
        (
            "GET /open/x HTTP/1.1\r\nHost: bad_host!\r\n\r\n".into(),
            400,
            "invalid_request",
        ),
        (
            format!("GET /open/x HTTP/1.1\r\nHost: api.example.no\r\nX-Pad: {pad}\r\n\r\n"),
            431,
            "headers_too_large",
        ),
        (
            "GET /open/x HTTP/1.1\r\nHost: a.example.no\r\nHost: b.example.no\r\n\r\n".into(),
            400,
            "invalid_request",
        ),
        (get("/dead/x"), 502, "upstream_unavailable"),
    ];
    for (request, status, reason) in &cases {
        let answer = then_next_request_is_answered(&gw, request.as_bytes());
        answer.assert_problem(*status, reason);
    }
    // 504: the upstream answers after the route's read timeout.
    world.echo.set_delay(Duration::from_secs(3));
    let mut conn = Conn::open(gw.addr);
    conn.send(get("/open/slow").as_bytes());
    let answer = conn.answer().expect("504");
    world.echo.set_delay(Duration::ZERO);
    answer.assert_problem(504, "upstream_timeout");
    assert!(answer.closes(), "{answer:?}");
    assert!(conn.ends_cleanly());
    then_next_request_is_answered(&gw, get("/dead/again").as_bytes());
}

/// Item 1 byte for byte: the 502 says `Connection: close`, not keep-alive.
#[test]
fn a_502_says_connection_close_and_the_connection_ends_cleanly() {
    let world = World::new();
    let gw = world.start(&config());
    let mut conn = Conn::open(gw.addr);
    conn.send(b"GET /dead/x HTTP/1.1\r\nHost: api.example.no\r\nX-Request-Id: req-502\r\n\r\n");
    let answer = conn.answer().expect("502");
    answer.assert_problem(502, "upstream_unavailable");
    assert_eq!(answer.header("x-request-id"), Some("req-502"));
    assert_eq!(answer.header("connection"), Some("close"), "{answer:?}");
    assert!(conn.ends_cleanly());
}

/// Item 2: a complete request, then the client half-closes: the upstream
/// serves it and the client gets the answer.
#[test]
fn a_half_closed_client_gets_its_answer() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    world.echo.set_delay(Duration::from_millis(300));
    let mut conn = Conn::open(gw.addr);
    conn.send(get("/open/half").as_bytes());
    conn.stream.shutdown(Shutdown::Write).unwrap();
    let answer = conn.answer().expect("an answer after the half-close");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed_uri(&answer), "/open/half");
    assert_eq!(world.echo.seen().len(), 1);
    eventually(5, "the audit line", || {
        gw.audit_lines()
            .iter()
            .any(|l| l["route"] == "open" && l["status"] == 200)
    });
}

/// Item 3: pipelined requests are answered in order on one connection.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    let mut conn = Conn::open(gw.addr);
    let mut batch = String::new();
    for i in 1..=3 {
        batch.push_str(&get(&format!("/open/{i}")));
    }
    batch
        .push_str("POST /open/4 HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: 4\r\n\r\nbody");
    batch.push_str(&get("/open/5"));
    conn.send(batch.as_bytes());
    for i in 1..=5 {
        let answer = conn
            .answer()
            .unwrap_or_else(|| panic!("no answer to pipelined request {i}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(echoed_uri(&answer), format!("/open/{i}"));
    }
    let seen: Vec<String> = world.echo.seen().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        seen,
        ["/open/1", "/open/2", "/open/3", "/open/4", "/open/5"]
    );
}

/// Item 3: a close with unread client bytes lingers: the answer the upstream
/// served arrives whole, and the connection ends with a FIN, not a reset.
#[test]
fn a_close_with_unread_bytes_does_not_wipe_the_answer() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    let mut conn = Conn::open(gw.addr);
    let mut bytes =
        b"GET /open/last HTTP/1.1\r\nHost: api.example.no\r\nConnection: close\r\n\r\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 256 * 1024));
    conn.send(&bytes);
    // Let the gateway answer and close before anything is read here: a
    // reset would now destroy the answer waiting in this socket.
    eventually(5, "the upstream served it", || world.echo.seen().len() == 1);
    std::thread::sleep(Duration::from_millis(300));
    let answer = conn.answer().expect("the answer survives the close");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed_uri(&answer), "/open/last");
    assert!(answer.closes());
    assert!(conn.ends_cleanly(), "a FIN, not a reset");
}

/// Item 4: an invalid chunked body after the head went upstream: the client
/// gets 400 problem+json and `Connection: close`.
#[test]
fn an_invalid_chunked_body_is_answered_400() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    world.echo.set_delay(Duration::from_millis(500));
    let mut conn = Conn::open(gw.addr);
    conn.send(
        b"POST /open/chunked HTTP/1.1\r\nHost: api.example.no\r\nTransfer-Encoding: chunked\r\n\r\n\
          fffffffffffffffffffff\r\nabc\r\n",
    );
    let answer = conn.answer().expect("an answer to the broken body");
    answer.assert_problem(400, "invalid_request");
    assert!(answer.closes(), "{answer:?}");
    assert!(conn.ends_cleanly());
}

/// Item 5: what pingora's parser refused with a bare 400 is a problem+json
/// refusal with `X-Request-Id`, counted in `http_errors_total`, and never
/// reaches the upstream.
#[test]
fn parser_refusals_are_problem_json_counted_and_never_forwarded() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    let before = gw
        .series(
            "consent_gateway_http_errors_total",
            &[("kind", "invalid_request")],
        )
        .unwrap_or(0.0);
    let cases: [&[u8]; 7] = [
        b"GET /open/x HTTP/1.1\r\nHost: a.example.no\r\nHost: b.example.no\r\nX-Request-Id: dup-host\r\n\r\n",
        b"POST /open/x HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /open/x HTTP/1.1\r\nHost: api.example.no\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /open/x HTTP/1.1\r\nHost: api.example.no\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"GET /open/x HTTP/1.2\r\nHost: api.example.no\r\n\r\n",
        b"GET /open/x HTTP/1.1\r\nHost: api.example.no\r\nBad Header: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    for case in cases {
        let mut conn = Conn::open(gw.addr);
        conn.send(case);
        let answer = conn
            .answer()
            .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(case)));
        answer.assert_problem(400, "invalid_request");
        assert!(answer.closes(), "{answer:?}");
        assert!(conn.ends_cleanly());
        if case.ends_with(b"dup-host\r\n\r\n") {
            assert_eq!(answer.header("x-request-id"), Some("dup-host"));
        }
    }
    assert!(world.echo.seen().is_empty(), "{:?}", world.echo.seen());
    let after = gw
        .series(
            "consent_gateway_http_errors_total",
            &[("kind", "invalid_request")],
        )
        .unwrap_or(0.0);
    assert_eq!(after - before, cases.len() as f64);
    // The audit writer is a queue: its lines reach stdout a moment later.
    let audited = || {
        gw.audit_lines()
            .iter()
            .filter(|l| l["reason"] == "invalid_request" && l["status"] == 400)
            .count()
    };
    eventually(10, "an audit line per refusal", || audited() >= cases.len());
    assert_eq!(audited(), cases.len());
}

/// Item 5, pipelined: a bad request behind a good one on one connection:
/// the good one is answered, then the refusal, then the close.
#[test]
fn a_bad_request_pipelined_behind_a_good_one_is_refused_after_its_answer() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    let mut conn = Conn::open(gw.addr);
    let mut batch = get("/open/good");
    batch.push_str("GET /open/bad HTTP/1.1\r\nHost: a.example.no\r\nHost: b.example.no\r\n\r\n");
    conn.send(batch.as_bytes());
    let good = conn.answer().expect("the good request's answer");
    assert_eq!(good.status, 200, "{good:?}");
    let bad = conn.answer().expect("the refusal");
    bad.assert_problem(400, "invalid_request");
    assert!(conn.ends_cleanly());
    let seen: Vec<String> = world.echo.seen().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(seen, ["/open/good"]);
}

/// Item 6: the header-size limit is exact: 8,192 bytes pass, 8,193 and
/// 8,194 are 431.
#[test]
fn the_header_size_limit_is_exact() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    let block = |total: usize| {
        let head = "GET /open/size HTTP/1.1\r\nHost: api.example.no\r\nX-Pad: ";
        format!("{head}{}\r\n\r\n", "p".repeat(total - head.len() - 4))
    };
    let at_limit = block(8192);
    assert_eq!(at_limit.len(), 8192);
    let mut conn = Conn::open(gw.addr);
    conn.send(at_limit.as_bytes());
    assert_eq!(conn.answer().expect("answer").status, 200);
    for total in [8193, 8194] {
        let mut conn = Conn::open(gw.addr);
        conn.send(block(total).as_bytes());
        let answer = conn.answer().expect("answer");
        answer.assert_problem(431, "headers_too_large");
        assert!(conn.ends_cleanly());
    }
    assert_eq!(world.echo.seen().len(), 1);
}

/// Item 7: two identical `Content-Length` headers reach the upstream as one.
#[test]
fn identical_content_lengths_are_forwarded_as_one() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    let mut conn = Conn::open(gw.addr);
    conn.send(
        b"POST /open/cl HTTP/1.1\r\nHost: api.example.no\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
    let answer = conn.answer().expect("answer");
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = world.echo.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header_all("content-length"), ["5"]);
    assert_eq!(seen[0].body_len, 5);
}

/// Item 8: with one of two targets dead and no health check, a failed
/// connect is retried on the other target: every request is served.
#[test]
fn a_failed_connect_fails_over_to_the_other_target() {
    let world = World::new();
    let gw = world.start(&config());
    world.echo.clear();
    for i in 0..8 {
        let answer = then_next_request_is_answered(&gw, get(&format!("/pair/{i}")).as_bytes());
        assert_eq!(answer.status, 200, "request {i}: {answer:?}");
    }
    let served = world
        .echo
        .seen()
        .iter()
        .filter(|r| r.uri.starts_with("/pair/"))
        .count();
    assert_eq!(served, 8);
}

/// Item 10: SIGTERM with nothing in flight ends the process promptly, not
/// after the whole grace period; a request in flight is still answered.
#[test]
fn shutdown_does_not_wait_out_the_grace_period_when_idle() {
    let world = World::new();
    let gw = world.spawn_custom(&config(), &[], &["--grace-period", "120"], &|dir, text| {
        let path = dir.join("gateway.yaml");
        std::fs::write(&path, text).unwrap();
        path
    });
    let mut gw = gw;
    wait_ready(&gw);
    world.echo.set_delay(Duration::from_millis(800));
    let mut conn = Conn::open(gw.addr);
    conn.send(get("/open/inflight").as_bytes());
    eventually(5, "the request reached the upstream", || {
        !world.echo.seen().is_empty()
    });
    gw.signal("TERM");
    let answer = conn.answer().expect("the request in flight is answered");
    assert_eq!(answer.status, 200);
    // The grace period is 120 s: an exit within 30 s is the prompt one.
    let mut status = None;
    eventually(30, "the process exits", || {
        status = gw.child.try_wait().ok().flatten();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// Item 11: a listen address already in use ends the process at once with
/// exit status 1 and a message naming the address.
#[test]
fn a_listen_address_in_use_exits_1_at_once() {
    let world = World::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let template = config().replace("{listen}", &addr.to_string());
    let mut gw = world.spawn(&template, &[]);
    let mut status = None;
    // pingora alone retries for 30 s, then panics a thread and stays up.
    eventually(20, "the process exits", || {
        status = gw.child.try_wait().ok().flatten();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", gw.stderr());
    assert!(
        gw.stderr().contains(&format!("cannot listen on {addr}")),
        "{}",
        gw.stderr()
    );
    drop(taken);
}
