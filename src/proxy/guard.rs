//! Connection-level protections pingora does not offer itself: the whole
//! request header block must arrive within `header_read_timeout` (a slowloris
//! client that dribbles bytes is cut off), and at most `max_connections`
//! client connections are served at once per service (more are refused).
//!
//! `GuardedApp` wraps the proxy's `ServerApp`; every accepted stream is
//! wrapped in a `GuardedStream` that enforces the header deadline and holds a
//! connection permit until the connection closes.
//!
//! An HTTP/2 connection (ALPN `h2`, or the h2c preface on a listener with
//! `server.h2c`) is not HTTP/1 bytes: the guard only holds its permit and
//! leaves the framing to the h2 codec and its limits (`server::h2_options`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::audit;
use crate::error::Reason;
use crate::gateway::Gateway;
use crate::metrics::NO_ROUTE_LABEL;
use crate::policy::DeniedFacts;
use crate::proxy::http1::{block_end, check_block, refusal_response, Framing, Refusal};
use crate::proxy::request_id::RequestId;

/// Where a connection is in its request cycle, as seen from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request (keep-alive idle: pingora's
    /// keepalive timeout governs).
    Idle,
    /// Inside a header block: reads are bounded by the deadline.
    Header,
    /// Inside a `Content-Length` body: this many bytes are left.
    Body(u64),
    /// Past a header block whose body framing is not followed (chunked, or
    /// the block was not checked): the next read after a response byte was
    /// written starts a request.
    Untracked,
    /// After an upgrade or CONNECT request: no more requests to read.
    Tunnel,
}

/// The request line of the HTTP/2 connection preface (RFC 9113 section
/// 3.4) and the empty line after it, as an HTTP/1 scanner sees it.
const H2_PREFACE_HEAD: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so that its unread bytes do not turn the close into a
/// reset that wipes the answer (nginx's `lingering_time`/`lingering_timeout`).
const LINGER_TOTAL: Duration = Duration::from_secs(5);
const LINGER_QUIET: Duration = Duration::from_secs(2);
/// At most this much is read and discarded while lingering.
const LINGER_MAX_BYTES: usize = 1 << 20;

/// A client stream with a header-block deadline, the header-block checks
/// pingora's parser would answer bare, a connection permit, and a lingering
/// close.
pub struct GuardedStream {
    /// Always present until the stream is dropped (then the lingering close
    /// takes it).
    inner: Option<Stream>,
    gateway: Option<Arc<Gateway>>,
    timeout: Duration,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    /// Whether `deadline` is set for the header block being read. It is set
    /// only when a read inside a header block would wait: a header block that
    /// arrives in one read (the common case) never touches the timer wheel.
    armed: bool,
    /// Whether the header block has begun: the parser (httparse) skips
    /// empty lines before a request line, so line ends before the first
    /// other byte do not count.
    started: bool,
    /// The header block read so far, when it spans reads.
    block: Vec<u8>,
    /// `max_request_header_bytes` for the block being read.
    limit: usize,
    /// Whether the byte framing is followed, so each header block is checked;
    /// lost for good after a chunked body (pingora's parser still checks).
    synced: bool,
    /// A header block was read and no response byte written since: a
    /// pipelined header block is not timed while the previous one is served.
    awaiting: bool,
    /// Set once a response byte was written: the next read starts a request.
    wrote: bool,
    /// The guard's own refusal, written before the connection closes; once
    /// set, reads see the end of the stream.
    refusal: Option<Vec<u8>>,
    /// The client ended its sending side (a read returned no bytes).
    eof: bool,
    /// Our sending side was shut down (FIN sent).
    shut: bool,
    permit: Option<OwnedSemaphorePermit>,
    /// `server.h2c`: the HTTP/2 preface switches the connection to h2.
    h2c: bool,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("phase", &self.phase)
            .field("inner", &self.inner)
            .finish()
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::NotConnected, "stream closed")
}

impl GuardedStream {
    /// The first request's header block must be complete `timeout` after
    /// accept. With a gateway, every header block is checked against its
    /// limits and pingora's parser rules; without one (unit tests), only timed.
    fn new(
        inner: Stream,
        gateway: Option<Arc<Gateway>>,
        timeout: Duration,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let synced = gateway.is_some();
        let mut s = Self {
            inner: Some(inner),
            gateway,
            timeout,
            phase: Phase::Header,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: true,
            started: false,
            block: Vec::new(),
            limit: usize::MAX,
            synced,
            awaiting: false,
            wrote: false,
            refusal: None,
            eof: false,
            shut: false,
            permit: Some(permit),
            h2c: false,
        };
        s.limit = s.current_limit();
        s
    }

    /// The connection speaks HTTP/2 from its first byte (ALPN `h2`): no
    /// HTTP/1 scanning, no header deadline.
    fn http2(mut self) -> Self {
        self.phase = Phase::Tunnel;
        self
    }

    fn current_limit(&self) -> usize {
        self.gateway.as_ref().map_or(usize::MAX, |g| {
            g.snapshot().config.server.limits.max_request_header_bytes
        })
    }

    /// Advances the request tracker over freshly read bytes. Returns, when
    /// a header block in them is refused, how many of the bytes belong to
    /// earlier requests (those still go to pingora; the rest do not).
    fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < chunk.len() {
            match self.phase {
                Phase::Tunnel | Phase::Untracked => return None,
                Phase::Body(left) => {
                    let take = left.min((chunk.len() - at) as u64);
                    at += take as usize;
                    self.phase = match left - take {
                        0 => Phase::Idle,
                        left => Phase::Body(left),
                    };
                }
                Phase::Idle => {
                    // The first byte of the next request: its header block
                    // starts now.
                    self.phase = Phase::Header;
                    self.started = false;
                    self.block.clear();
                    self.limit = self.current_limit();
                    if !self.awaiting {
                        self.armed = false;
                    }
                }
                Phase::Header => {
                    if !self.started {
                        match chunk[at..].iter().position(|&b| b != b'\r' && b != b'\n') {
                            Some(first) => {
                                at += first;
                                self.started = true;
                                self.block.clear();
                            }
                            None => return None,
                        }
                    }
                    let begins_here = self.block.is_empty();
                    let keep = if begins_here { at } else { 0 };
                    if let Err(refusal) = self.header_bytes(chunk, &mut at) {
                        self.refuse(refusal);
                        return Some(keep);
                    }
                }
            }
        }
        None
    }

    /// Takes header-block bytes from `chunk[*at..]`; at the block's end,
    /// checks it and moves to what follows.
    fn header_bytes(&mut self, chunk: &[u8], at: &mut usize) -> Result<(), Refusal> {
        let too_large = || Refusal {
            reason: Reason::HeadersTooLarge,
            request_id: None,
            method: None,
        };
        let rest = &chunk[*at..];
        let framing = if self.block.is_empty() {
            match block_end(rest, 0) {
                Some(end) => {
                    *at += end;
                    self.check(&rest[..end])?
                }
                None => {
                    if rest.len() > self.limit {
                        return Err(too_large());
                    }
                    self.block.extend_from_slice(rest);
                    *at = chunk.len();
                    return Ok(());
                }
            }
        } else {
            let old = self.block.len();
            self.block.extend_from_slice(rest);
            match block_end(&self.block, old.saturating_sub(2)) {
                Some(end) => {
                    *at += end - old;
                    let block = std::mem::take(&mut self.block);
                    let framing = self.check(&block[..end]);
                    self.block = block;
                    self.block.clear();
                    framing?
                }
                None => {
                    if self.block.len() > self.limit {
                        return Err(too_large());
                    }
                    *at = chunk.len();
                    return Ok(());
                }
            }
        };
        // Only the connection's first bytes may be the HTTP/2 preface.
        self.h2c = false;
        self.awaiting = true;
        self.wrote = false;
        self.phase = match framing {
            Framing::None => Phase::Idle,
            Framing::Length(n) => Phase::Body(n),
            Framing::Untracked => {
                self.synced = false;
                Phase::Untracked
            }
            Framing::Tunnel => Phase::Tunnel,
        };
        Ok(())
    }

    /// Checks a complete header block (when the framing is followed).
    fn check(&self, block: &[u8]) -> Result<Framing, Refusal> {
        if !self.synced {
            return Ok(Framing::Untracked);
        }
        if self.h2c && block.starts_with(H2_PREFACE_HEAD) {
            // pingora peeked the same preface and hands the stream to h2.
            return Ok(Framing::Tunnel);
        }
        check_block(block, self.limit)
    }

    /// Records the guard's own refusal: answered (problem+json, `Connection:
    /// close`) when the connection closes, counted and audited now.
    fn refuse(&mut self, refusal: Refusal) {
        let request_id = refusal
            .request_id
            .clone()
            .map(RequestId::from_header)
            .unwrap_or_default();
        let mut documentation = None;
        if let Some(gateway) = &self.gateway {
            record_refusal(gateway, &refusal, request_id.as_str());
            documentation = gateway.snapshot().config.service.documentation_url.clone();
        }
        self.refusal = Some(refusal_response(
            refusal.reason,
            request_id.as_str(),
            documentation.as_deref(),
        ));
        self.phase = Phase::Tunnel;
    }

    /// Sets the deadline of the header block being read, once per block.
    fn arm(&mut self) {
        if !self.armed {
            self.armed = true;
            let at = Instant::now() + self.timeout;
            self.deadline.as_mut().reset(at);
        }
    }
}

/// Counts and audits a refusal the guard answers itself, as the proxy does
/// for a refusal before routing (`route="-"`).
fn record_refusal(gateway: &Gateway, refusal: &Refusal, request_id: &str) {
    let code = refusal.reason.code();
    let metrics = &gateway.metrics;
    metrics
        .requests_total
        .with_label_values(&[NO_ROUTE_LABEL, "deny", code])
        .inc();
    metrics.http_errors_total.with_label_values(&[code]).inc();
    let snapshot = gateway.snapshot();
    if snapshot.config.audit.enabled {
        let line = audit::AuditLine {
            ts: std::time::SystemTime::now(),
            request_id,
            route: NO_ROUTE_LABEL,
            method: refusal.method.as_deref().unwrap_or("-"),
            path: "-",
            decision: "deny",
            reason: code,
            status: refusal.reason.status(),
            authorized: None,
            denied: &DeniedFacts::default(),
            duration_ms: 0.0,
            trace_id: None,
        };
        audit::emit(&line, &snapshot.config.audit);
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.refusal.is_some() {
            // The guard answers this connection: pingora sees its end.
            return Poll::Ready(Ok(()));
        }
        if this.phase == Phase::Untracked && this.wrote {
            this.phase = Phase::Idle;
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let before = buf.filled().len();
        match Pin::new(inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let end = buf.filled().len();
                if end == before && buf.remaining() > 0 {
                    this.eof = true;
                }
                if let Some(keep) = this.scan(&buf.filled()[before..end]) {
                    buf.set_filled(before + keep);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase != Phase::Header || this.awaiting {
                    return Poll::Pending;
                }
                this.arm();
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request header block did not arrive within header_read_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let result = Pin::new(inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote = true;
            this.awaiting = false;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.refusal.is_some() {
            // The refusal must go out before the FIN: the lingering close
            // on drop sends both, in that order.
            return Poll::Ready(Ok(()));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let result = Pin::new(inner).poll_shutdown(cx);
        if result.is_ready() {
            this.shut = true;
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let result = Pin::new(inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote = true;
            this.awaiting = false;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    /// pingora's close of a connection it will not reuse: the guard's own
    /// refusal goes first, then the FIN (the drain follows on drop).
    async fn shutdown(&mut self) {
        let Some(inner) = self.inner.as_mut() else {
            return;
        };
        if let Some(refusal) = self.refusal.take() {
            let _ = tokio::time::timeout(LINGER_QUIET, inner.write_all(&refusal)).await;
            let _ = tokio::time::timeout(LINGER_QUIET, inner.flush()).await;
        }
        Shutdown::shutdown(&mut **inner).await;
        self.shut = true;
    }
}

impl Drop for GuardedStream {
    /// Every connection ends here. Unless the client already closed its side,
    /// the close lingers on a task of its own: the guard's refusal (if any)
    /// is written, the sending side shut down, and what the client still
    /// sends is read and discarded (bounded in time and size) until it
    /// closes, so the kernel does not answer unread bytes with a reset that
    /// destroys the response still on its way. The connection permit is held
    /// until then.
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.eof && self.refusal.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let refusal = self.refusal.take();
        let shut = self.shut;
        let permit = self.permit.take();
        runtime.spawn(linger(inner, refusal, shut, permit));
    }
}

/// The lingering close of one connection.
async fn linger(
    mut stream: Stream,
    refusal: Option<Vec<u8>>,
    shut: bool,
    permit: Option<OwnedSemaphorePermit>,
) {
    if let Some(refusal) = refusal {
        let _ = tokio::time::timeout(LINGER_QUIET, stream.write_all(&refusal)).await;
    }
    if !shut {
        let _ = tokio::time::timeout(LINGER_QUIET, AsyncWriteExt::shutdown(&mut stream)).await;
    }
    let until = Instant::now() + LINGER_TOTAL;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(LINGER_QUIET);
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    drop(permit);
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner
            .as_ref()
            .map_or(UniqueIDType::default(), |s| s.id())
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.as_ref()?.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.as_ref()?.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.as_ref()?.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |s| s.get_timing_digest())
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_read_pending_time())
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_write_pending_time())
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.as_ref()?.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.set_proxy_digest(digest)
        }
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.as_ref()?.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.set_socket_digest(digest)
        }
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        match self.inner.as_mut() {
            Some(s) => s.try_peek(buf).await,
            None => Err(gone()),
        }
    }
}

/// The client connections of one proxy service that are open (lingering
/// closes included), for a prompt shutdown.
#[derive(Clone)]
pub struct OpenConnections {
    permits: Arc<Semaphore>,
    max: usize,
}

impl OpenConnections {
    pub fn count(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

/// Wraps a `ServerApp` (the pingora proxy) with the connection guards.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    gateway: Arc<Gateway>,
    header_read_timeout: Duration,
    connections: OpenConnections,
    /// `server.h2c` on this service's plain listeners.
    h2c: bool,
}

impl<A> GuardedApp<A> {
    pub fn new(
        inner: A,
        gateway: Arc<Gateway>,
        header_read_timeout: Duration,
        max_connections: usize,
    ) -> Self {
        let max = max_connections.max(1);
        Self {
            inner: Arc::new(inner),
            gateway,
            header_read_timeout,
            connections: OpenConnections {
                permits: Arc::new(Semaphore::new(max)),
                max,
            },
            h2c: false,
        }
    }

    /// Lets the HTTP/2 preface through on plain connections (`server.h2c`).
    pub fn with_h2c(mut self, h2c: bool) -> Self {
        self.h2c = h2c;
        self
    }

    /// A view of the open connections, for shutdown.
    pub fn open_connections(&self) -> OpenConnections {
        self.connections.clone()
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    /// Runs for each accepted connection (and again for each reused one):
    /// wraps a new connection once, within the connection limit; a reused
    /// one is already wrapped.
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let session: Stream = if session.as_any().is::<GuardedStream>() {
            session
        } else {
            let Ok(permit) = Arc::clone(&self.connections.permits).try_acquire_owned() else {
                log::warn!("max_connections reached: refusing a connection");
                return None;
            };
            let h2 = matches!(session.selected_alpn_proto(), Some(ALPN::H2));
            let mut guarded = GuardedStream::new(
                session,
                Some(Arc::clone(&self.gateway)),
                self.header_read_timeout,
                permit,
            );
            guarded.h2c = self.h2c;
            Box::new(if h2 { guarded.http2() } else { guarded })
        };
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> GuardedStream {
        let sem = Arc::new(Semaphore::new(1));
        let permit = sem.try_acquire_owned().unwrap();
        let tcp: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(
            std::net::TcpListener::bind("127.0.0.1:0")
                .map(|l| {
                    let addr = l.local_addr().unwrap();
                    let s = std::net::TcpStream::connect(addr).unwrap();
                    s.set_nonblocking(true).unwrap();
                    tokio::net::TcpStream::from_std(s).unwrap()
                })
                .unwrap(),
        ));
        GuardedStream::new(tcp, None, Duration::from_secs(10), permit)
    }

    #[tokio::test]
    async fn scanner_finds_header_end_across_reads_and_rearms() {
        let mut s = stream();
        s.scan(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\n\r");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\nbody");
        assert_eq!(s.phase, Phase::Untracked);
        // A response was written; the next bytes start a new header block.
        s.wrote = true;
        s.phase = Phase::Idle;
        s.scan(b"GET /next");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b" HTTP/1.1\r\n\r\n");
        assert_eq!(s.phase, Phase::Untracked);
    }

    /// The reference: after any leading CR/LF, an LF followed by LF or CRLF.
    fn contains_header_end(bytes: &[u8]) -> bool {
        let Some(first) = bytes.iter().position(|&b| b != b'\r' && b != b'\n') else {
            return false;
        };
        let block = &bytes[first..];
        block.windows(2).any(|w| w == b"\n\n") || block.windows(3).any(|w| w == b"\n\r\n")
    }

    #[tokio::test]
    async fn leading_empty_lines_do_not_end_the_header_block() {
        let mut s = stream();
        s.scan(b"\r\n\r\n");
        assert_eq!(
            s.phase,
            Phase::Header,
            "empty lines before the request line"
        );
        s.scan(b"\n\nGET / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\r\n");
        assert_eq!(s.phase, Phase::Untracked);
    }

    #[tokio::test]
    async fn bare_line_feeds_end_the_header_block() {
        let mut s = stream();
        s.scan(b"GET / HTTP/1.1\nHost: x\n");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\n");
        assert_eq!(s.phase, Phase::Untracked);
    }

    proptest::proptest! {
        /// Fed in any chunks, the scanner leaves the header block exactly when
        /// the bytes so far end one as httparse does, wherever the chunks
        /// split them.
        #[test]
        fn scanner_agrees_with_a_plain_search(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'a']), 0..64),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let _guard = runtime.enter();
            let mut s = stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut start = 0;
            for end in cuts {
                s.scan(&bytes[start..end]);
                start = end;
                proptest::prop_assert_eq!(
                    s.phase == Phase::Untracked,
                    contains_header_end(&bytes[..end]),
                    "after {:?}", &bytes[..end]
                );
                if s.phase == Phase::Untracked {
                    break;
                }
            }
        }
    }
}
