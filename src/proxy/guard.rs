//! Connection-level protections pingora does not offer itself: the whole
//! request header block must arrive within `header_read_timeout` (a slowloris
//! client that dribbles bytes is cut off), and at most `max_connections`
//! client connections are served at once per service (more are refused).
//!
//! `GuardedApp` wraps the proxy's `ServerApp`; every accepted stream is
//! wrapped in a `GuardedStream` that enforces the header deadline and holds a
//! connection permit until the connection closes.

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Where a connection is in its request cycle, as seen from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request (keep-alive idle: pingora's
    /// keepalive timeout governs).
    Idle,
    /// Inside a header block: reads are bounded by the deadline.
    Header,
    /// Past the header block (body, or waiting for the response).
    Body,
}

/// A client stream with a header-block deadline and a connection permit.
pub struct GuardedStream {
    inner: Stream,
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
    /// The last (up to two) bytes of the header block read so far, for an
    /// end of block split across reads.
    tail: [u8; 2],
    tail_len: usize,
    /// Set once a response byte was written: the next read starts a request.
    wrote: bool,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("phase", &self.phase)
            .field("inner", &self.inner)
            .finish()
    }
}

impl GuardedStream {
    /// The first request's header block must be complete `timeout` after accept.
    fn new(inner: Stream, timeout: Duration, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            timeout,
            phase: Phase::Header,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: true,
            started: false,
            tail: [0; 2],
            tail_len: 0,
            wrote: false,
            _permit: permit,
        }
    }

    /// Advances the header scanner over freshly read bytes. The block ends
    /// where httparse ends it: at an empty line, `\n\n` or `\n\r\n` (so
    /// `\r\n\r\n` and bare-LF line ends alike), after any empty lines that
    /// precede the request line.
    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            // The first byte of the next request: its header block starts now.
            self.phase = Phase::Header;
            self.started = false;
            self.armed = false;
        }
        if self.phase != Phase::Header {
            return;
        }
        let mut bytes = bytes;
        if !self.started {
            match bytes.iter().position(|&b| b != b'\r' && b != b'\n') {
                Some(first) => {
                    bytes = &bytes[first..];
                    self.started = true;
                    self.tail_len = 0;
                }
                None => return,
            }
        }
        if self.header_end_in(bytes) {
            self.phase = Phase::Body;
            self.wrote = false;
        } else {
            self.keep_tail(bytes);
        }
    }

    /// Whether the header block ends within `bytes` (or across the previous
    /// read and this one).
    fn header_end_in(&self, bytes: &[u8]) -> bool {
        // A request without a body ends its read with the header block.
        if bytes.ends_with(b"\r\n\r\n") {
            return true;
        }
        // An end (at most 3 bytes) that straddles the two reads lies within
        // the last 2 bytes before and the first 2 after.
        let mut joint = [0u8; 4];
        joint[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
        let take = bytes.len().min(2);
        joint[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
        has_empty_line(&joint[..self.tail_len + take]) || has_empty_line(bytes)
    }

    /// Remembers the last two bytes of the block read so far.
    fn keep_tail(&mut self, bytes: &[u8]) {
        if bytes.len() >= 2 {
            self.tail.copy_from_slice(&bytes[bytes.len() - 2..]);
            self.tail_len = 2;
        } else {
            let mut joint = [0u8; 3];
            joint[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joint[self.tail_len..self.tail_len + bytes.len()].copy_from_slice(bytes);
            let len = self.tail_len + bytes.len();
            let keep = len.min(2);
            self.tail[..keep].copy_from_slice(&joint[len - keep..len]);
            self.tail_len = keep;
        }
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

/// Whether `bytes` holds an empty line: `\n\n` or `\n\r\n`.
fn has_empty_line(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|at| match bytes.get(at + 1) {
        Some(b'\n') => true,
        Some(b'\r') => bytes.get(at + 2) == Some(&b'\n'),
        _ => false,
    })
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.phase == Phase::Body && this.wrote {
            this.phase = Phase::Idle;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.scan(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase != Phase::Header {
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
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote = true;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote = true;
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// Wraps a `ServerApp` (the pingora proxy) with the connection guards.
pub struct GuardedApp<A> {
    inner: Arc<A>,
    header_read_timeout: Duration,
    connections: Arc<Semaphore>,
}

impl<A> GuardedApp<A> {
    pub fn new(inner: A, header_read_timeout: Duration, max_connections: usize) -> Self {
        Self {
            inner: Arc::new(inner),
            header_read_timeout,
            connections: Arc::new(Semaphore::new(max_connections.max(1))),
        }
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
            let Ok(permit) = Arc::clone(&self.connections).try_acquire_owned() else {
                log::warn!("max_connections reached: refusing a connection");
                return None;
            };
            Box::new(GuardedStream::new(
                session,
                self.header_read_timeout,
                permit,
            ))
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
        GuardedStream::new(tcp, Duration::from_secs(10), permit)
    }

    #[tokio::test]
    async fn scanner_finds_header_end_across_reads_and_rearms() {
        let mut s = stream();
        s.scan(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\n\r");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\nbody");
        assert_eq!(s.phase, Phase::Body);
        // A response was written; the next bytes start a new header block.
        s.wrote = true;
        s.phase = Phase::Idle;
        s.scan(b"GET /next");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b" HTTP/1.1\r\n\r\n");
        assert_eq!(s.phase, Phase::Body);
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
        assert_eq!(s.phase, Phase::Body);
    }

    #[tokio::test]
    async fn bare_line_feeds_end_the_header_block() {
        let mut s = stream();
        s.scan(b"GET / HTTP/1.1\nHost: x\n");
        assert_eq!(s.phase, Phase::Header);
        s.scan(b"\n");
        assert_eq!(s.phase, Phase::Body);
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
                    s.phase == Phase::Body,
                    contains_header_end(&bytes[..end]),
                    "after {:?}", &bytes[..end]
                );
                if s.phase == Phase::Body {
                    break;
                }
            }
        }
    }
}
