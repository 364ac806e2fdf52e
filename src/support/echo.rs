//! An echo upstream on loopback: answers every request with a JSON echo of
//! what it received, and records each request, so the demo shows and the
//! tests assert exactly what the backend saw (and that a denied request never
//! arrived). HTTP/1.1 with keep-alive and `Content-Length` bodies.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query as sent on the request line.
    pub uri: String,
    /// Header names lowercased, in arrival order, values lossily decoded.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// The body's bytes (a chunked body decoded).
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// Every value of a header (name compared case-insensitively).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of a header, if it appears exactly once.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_all(name).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<SeenRequest>>,
    delay: Mutex<Duration>,
    status: Mutex<Option<u16>>,
}

/// A running echo upstream; stops when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl EchoServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("loopback address")).await
    }

    /// Binds `addr` and serves on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (stop, mut stopped) = watch::channel(false);
        let accept_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = Arc::clone(&accept_shared);
                        let stop = stopped.clone();
                        tokio::spawn(serve_connection(stream, shared, stop));
                    }
                }
            }
        });
        Ok(Self { addr, shared, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        if let Ok(mut s) = self.shared.seen.lock() {
            s.clear();
        }
    }

    /// Delays every answer (to provoke upstream timeouts).
    pub fn set_delay(&self, delay: Duration) {
        if let Ok(mut d) = self.shared.delay.lock() {
            *d = delay;
        }
    }

    /// Answers with this status instead of 200.
    pub fn set_status(&self, status: Option<u16>) {
        if let Ok(mut s) = self.shared.status.lock() {
            *s = status;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        // Read one header block.
        let header_end = loop {
            if let Some(end) = find_header_end(&buf) {
                break end;
            }
            if buf.len() > 1 << 20 {
                return;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::select! {
                _ = stop.changed() => return,
                n = stream.read(&mut chunk) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            };
            buf.extend_from_slice(&chunk[..n]);
        };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(
            req.parse(&buf[..header_end]),
            Ok(httparse::Status::Complete(_))
        ) {
            return;
        }
        let method = req.method.unwrap_or("").to_string();
        let uri = req.path.unwrap_or("").to_string();
        let seen_headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let content_length: usize = seen_headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        let close = seen_headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        let chunked = seen_headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        buf.drain(..header_end);
        let body = loop {
            let complete = if chunked {
                dechunk(&buf)
            } else {
                (buf.len() >= content_length)
                    .then(|| (content_length, buf[..content_length].to_vec()))
            };
            if let Some((consumed, body)) = complete {
                buf.drain(..consumed);
                break body;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let seen = SeenRequest {
            method,
            uri,
            headers: seen_headers,
            body_len: body.len(),
            body,
        };
        let body = serde_json::to_vec_pretty(&seen).unwrap_or_default();
        if let Ok(mut s) = shared.seen.lock() {
            s.push(seen);
        }
        let delay = shared.delay.lock().map(|d| *d).unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let status = shared.status.lock().ok().and_then(|s| *s).unwrap_or(200);
        let head = format!(
            "HTTP/1.1 {status} Echo\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&body).await.is_err()
        {
            return;
        }
        if close {
            return;
        }
    }
}

/// A complete chunked body at the start of `buf`: the bytes it takes and the
/// decoded body (no trailers expected); `None` while incomplete.
fn dechunk(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let line_end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let size_text = std::str::from_utf8(&buf[at..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            return (buf.len() >= at + 2).then_some((at + 2, body));
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}
