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

const HEADER_END: &[u8; 4] = b"\r\n\r\n";

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
    /// How many bytes of `\r\n\r\n` the bytes read so far end with.
    matched: usize,
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
            matched: 0,
            wrote: false,
            _permit: permit,
        }
    }

    /// Advances the header scanner over freshly read bytes.
    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            // The first byte of the next request: its header block starts now.
            self.phase = Phase::Header;
            self.matched = 0;
            self.armed = false;
        }
        if self.phase != Phase::Header {
            return;
        }
        if header_end_found(self.matched, bytes) {
            self.phase = Phase::Body;
            self.wrote = false;
        } else {
            self.matched = partial_header_end(self.matched, bytes);
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

/// Whether `\r\n\r\n` ends within `bytes`, given that the bytes before them
/// ended with its first `carried` bytes (and contained no complete one).
fn header_end_found(carried: usize, bytes: &[u8]) -> bool {
    if carried > 0 {
        // A header end straddling the previous read and this one.
        let mut joint = [0u8; 6];
        let take = bytes.len().min(HEADER_END.len() - 1);
        joint[..carried].copy_from_slice(&HEADER_END[..carried]);
        joint[carried..carried + take].copy_from_slice(&bytes[..take]);
        if header_end_finder().find(&joint[..carried + take]).is_some() {
            return true;
        }
    }
    // A request without a body ends its read with the header block.
    bytes.ends_with(HEADER_END) || header_end_finder().find(bytes).is_some()
}

/// The searcher for `\r\n\r\n`, built once.
fn header_end_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(HEADER_END));
    &FINDER
}

/// How many bytes of `\r\n\r\n` the stream ends with after `bytes`, given
/// it ended with `carried` of them before and holds no complete one.
fn partial_header_end(carried: usize, bytes: &[u8]) -> usize {
    let mut tail = [0u8; 6];
    let tail = if bytes.len() >= HEADER_END.len() - 1 {
        &bytes[bytes.len() - (HEADER_END.len() - 1)..]
    } else {
        tail[..carried].copy_from_slice(&HEADER_END[..carried]);
        tail[carried..carried + bytes.len()].copy_from_slice(bytes);
        &tail[..carried + bytes.len()]
    };
    (1..HEADER_END.len())
        .rev()
        .find(|&k| tail.ends_with(&HEADER_END[..k]))
        .unwrap_or(0)
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

    fn contains_header_end(bytes: &[u8]) -> bool {
        bytes.windows(4).any(|w| w == HEADER_END)
    }

    proptest::proptest! {
        /// Fed in any chunks, the scanner leaves the header block exactly when
        /// the bytes so far hold `\r\n\r\n`, wherever the chunks split it.
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
