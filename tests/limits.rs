//! Connection limits through the real binary: the header block must arrive
//! within `header_read_timeout` (slowloris), keep-alive idle time is not
//! counted against it, and `max_connections` refuses connections beyond it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const CONFIG: &str = r#"
server:
  listen: ["{listen}"]
  admin_listen: "{admin}"
  threads: 1
  limits:
    header_read_timeout: 1s
    max_connections: 2
upstreams:
  - name: echo
    targets: ["{upstream}"]
routes:
  - name: open
    path: /{*rest}
    upstream: echo
    auth: none
"#;

/// Reads until EOF or error; returns what arrived and whether it ended.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn a_dribbled_header_block_is_cut_off() {
    dribble_after(b"");
}

#[test]
fn empty_lines_before_the_request_line_do_not_stop_the_header_clock() {
    // The HTTP parser skips them; the guard must not take them for the end
    // of a header block (then nothing would bound the dribble that follows).
    dribble_after(b"\r\n\r\n");
}

/// Sends `prefix`, then a header block one line every 200 ms: it must be cut
/// off near `header_read_timeout` (1 s) and never reach the upstream.
fn dribble_after(prefix: &[u8]) {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(prefix).unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Keep sending a header line every 200 ms: each read succeeds, but the
    // whole block never completes.
    let started = Instant::now();
    let mut cut = false;
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(200));
        if s.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes())
            .is_err()
        {
            cut = true;
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let mut b = [0u8; 256];
        if let Ok(0) = s.read(&mut b) {
            cut = true;
            break;
        }
    }
    assert!(cut, "the slow header block was never cut off");
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(
        world.echo.seen().is_empty(),
        "a partial request reached upstream"
    );
}

#[test]
fn keep_alive_idle_time_is_not_a_header_timeout() {
    let world = World::new();
    let gw = world.start(CONFIG);
    world.echo.clear();
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle for longer than header_read_timeout, then a second request.
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (rest, _) = read_until_closed(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let uris: Vec<String> = world.echo.seen().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(uris, vec!["/one".to_string(), "/two".to_string()]);
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let world = World::new();
    let gw = world.start(CONFIG);
    // Two connections hold the two permits (mid-header, under the timeout).
    let mut a = TcpStream::connect(gw.addr).unwrap();
    let mut b = TcpStream::connect(gw.addr).unwrap();
    a.write_all(b"GET /a HTTP/1.1\r\n").unwrap();
    b.write_all(b"GET /b HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut c = TcpStream::connect(gw.addr).unwrap();
    let _ = c.write_all(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (got, closed) = read_until_closed(&mut c, Duration::from_secs(3));
    assert!(
        closed && got.is_empty(),
        "third connection was served: {:?}",
        String::from_utf8_lossy(&got)
    );
    // Finishing one frees a permit.
    a.write_all(b"Host: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (resp, _) = read_until_closed(&mut a, Duration::from_secs(5));
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"));
    eventually(5, "a permit is free again", || {
        raw(
            gw.addr,
            "GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .map(|r| r.status == 200)
        .unwrap_or(false)
    });
    drop(b);
}
