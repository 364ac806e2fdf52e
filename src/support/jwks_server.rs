//! A small real HTTP/1.1 JWKS server on loopback, for tests, the `demo`
//! command and benches: one request per connection (`Connection: close`),
//! with switches to fail, redirect, delay or drop `Content-Length`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The path the JWKS is served on; any other path answers 404.
pub const JWKS_PATH: &str = "/jwks";
/// Largest request head read.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(5);

struct ServerState {
    body: Mutex<String>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    omit_content_length: AtomicBool,
    hits: AtomicUsize,
}

/// A running JWKS server on `127.0.0.1` with an ephemeral port. It serves on
/// its own thread and runtime, so it works from sync and async code alike,
/// and it is listening as soon as `start` returns. Stops when dropped.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for JwksServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl JwksServer {
    /// Starts serving `body` at `http://127.0.0.1:PORT/jwks`.
    ///
    /// Panics if a loopback port cannot be bound or a thread started (an
    /// environment failure, not an input error); see [`Self::try_start`].
    pub fn start(body: String) -> JwksServer {
        Self::try_start(body).expect("bind a loopback port for the JWKS server")
    }

    /// Like [`Self::start`], returning the I/O error instead of panicking.
    pub fn try_start(body: String) -> std::io::Result<JwksServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServerState {
            body: Mutex::new(body),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            omit_content_length: AtomicBool::new(false),
            hits: AtomicUsize::new(0),
        });
        let (shutdown, stop) = oneshot::channel();
        let served = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("jwks-server-{}", addr.port()))
            .spawn(move || {
                // Built and dropped on this thread: never inside a caller's runtime.
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => return log::error!("JWKS test server runtime: {error}"),
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, served, stop).await,
                        Err(error) => log::error!("JWKS test server: {error}"),
                    }
                });
                // Dropping the runtime here cancels connections still open.
            })?;
        Ok(JwksServer {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/jwks`.
    pub fn url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    /// Serves `body` from the next request on.
    pub fn set_body(&self, body: String) {
        *self
            .state
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = body;
    }

    /// `true`: answer 500 to every request; `false`: answer 200 again.
    pub fn set_failing(&self, failing: bool) {
        self.set_status(if failing { 500 } else { 200 });
    }

    /// Answers with this status (a 3xx carries a `Location` to the same URL).
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long after reading a request before answering it.
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// `true`: send the body without `Content-Length` (ended by closing).
    pub fn set_omit_content_length(&self, omit: bool) {
        self.state.omit_content_length.store(omit, Ordering::SeqCst);
    }

    /// Requests received so far (every path, every answer).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: TcpListener, state: Arc<ServerState>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, Arc::clone(&state)));
                }
                Err(error) => log::debug!("JWKS test server accept: {error}"),
            },
        }
    }
}

async fn answer(mut stream: TcpStream, state: Arc<ServerState>) {
    let Ok(Some(path)) = tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request_path(&mut stream))
        .await
        .unwrap_or(Ok(None))
    else {
        return;
    };
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = state.status.load(Ordering::SeqCst);
    let path_only = path.split('?').next().unwrap_or_default();
    let (status, body, location) = if path_only != JWKS_PATH {
        (404, "not found\n".to_string(), None)
    } else if status == 200 {
        let body = state
            .body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        (200, body, None)
    } else if (300..400).contains(&status) {
        (status, String::new(), Some(path.clone()))
    } else {
        (status, "failing on purpose\n".to_string(), None)
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nConnection: close\r\n",
        reason_phrase(status)
    );
    if !state.omit_content_length.load(Ordering::SeqCst) {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if let Some(location) = location {
        head.push_str(&format!("Location: {location}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads the request head; returns the request target, or `None` when the
/// client closed early or sent something that is not an HTTP request.
async fn read_request_path(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut request_line = text.lines().next().unwrap_or_default().split(' ');
    let (Some(_method), Some(target)) = (request_line.next(), request_line.next()) else {
        return Ok(None);
    };
    Ok(Some(target.to_string()))
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn serves_the_body_counts_hits_and_fails_on_demand() {
        let server = JwksServer::start("{\"keys\":[]}".into());
        assert!(server.url().ends_with("/jwks"));
        let ok = get(server.addr(), "/jwks");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Length: 11\r\n"));
        assert!(ok.ends_with("{\"keys\":[]}"));
        server.set_failing(true);
        assert!(get(server.addr(), "/jwks").starts_with("HTTP/1.1 500 "));
        server.set_failing(false);
        server.set_body("new".into());
        assert!(get(server.addr(), "/jwks").ends_with("\r\n\r\nnew"));
        assert!(get(server.addr(), "/other").starts_with("HTTP/1.1 404 "));
        assert_eq!(server.hits(), 4);
    }

    #[test]
    fn stops_listening_when_dropped() {
        let server = JwksServer::start(String::new());
        let addr = server.addr();
        drop(server);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }
}
